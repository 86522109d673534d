"""The plan's second offline voice: pyttsx3 (on Linux, its espeak driver over libespeak-ng).

Each sentence is rendered to a WAV file with `save_to_file` + `runAndWait`, read back and
resampled to the stream rate. pyttsx3 gives no phoneme timings, so the audio envelope drives the
mouth (chunks carry no marks).

Why one engine on one thread. pyttsx3's espeak driver keeps espeak-ng's state process-wide: it
initialises the library once, in asynchronous mode (audio arrives on espeak-ng's own thread), and
installs ONE global callback, which the newest engine takes over. `runAndWait` then polls until
that callback delivers the end of the message. Measured here (pyttsx3 2.99, espeak-ng 1.51): once
a second engine exists in the process, the first one's `runAndWait` loops forever (or, less often,
returns without writing its file). An engine per call cost 13 ms per sentence against 11 ms for a
kept one, and any older engine used again would hang. So each driver gets exactly one engine,
created and used only on its own daemon thread (`_EngineThread`); callers hand it work and wait
with a deadline. If a sentence overruns it, the caller raises `Stalled` and ends the stuck loop
(the driver's `endLoop`), and a new engine (taking the callback back) serves the next job: the
stream never waits on pyttsx3. 400 back-to-back sentences on one engine: no failure, 12 ms each.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import numpy as np
import soundfile

from poc.speech.base import (
    InvalidSpeechRequest,
    SpeechChunk,
    SpeechError,
    Stalled,
    VoiceInfo,
)
from poc.speech.local_text import sentences_to_say
from poc.speech.resample import resample_int16
from poc.speech.sentences import (
    join_chunks,
    language_matches,
    normalize_language,
)

LOGGER = logging.getLogger(__name__)

DEFAULT_LANGUAGE = "en-us"  # the default voice is the first that speaks this, like espeak's
TIMEOUT_S = 30.0  # per sentence; espeak-ng renders a 300-character sentence in ~50 ms
_GRACE_S = 0.5  # for an interrupted sentence to give its engine thread back
# pyttsx3's espeak driver writes every WAV at 22.05 kHz, but MBROLA voices ("mb/...") run at
# 16 kHz: their files would play at the wrong speed, so they are not offered.
_MISLABELLED_PREFIX = "mb/"

T = TypeVar("T")


@attrs.define
class _Job:
    work: Callable[[Any, list[BaseException]], Any]
    future: concurrent.futures.Future = attrs.field(factory=concurrent.futures.Future)
    started: float | None = None  # monotonic time it started running


class _EngineThread:
    """The process's one pyttsx3 engine for a driver, created and used on one daemon thread.

    Guarantees: jobs run one at a time, in order, on this thread only; `call` returns or raises
    within its timeout whatever the engine does; after any failed or interrupted job the engine
    is rebuilt before the next one.
    """

    def __init__(self, driver: str) -> None:
        self.driver = driver
        self._jobs: list[_Job] = []
        self._wake = threading.Condition()
        self._engine: Any = None  # pyttsx3.Engine; only this thread uses it (endLoop aside)
        self._errors: list[BaseException] = []  # the engine's "error" notifications
        self._broken = False
        self._running: _Job | None = None
        threading.Thread(target=self._serve, name=f"pyttsx3-{driver}", daemon=True).start()

    def call(self, work: Callable[[Any, list[BaseException]], T], timeout_s: float) -> T:
        """`work(engine, errors)` run on the engine thread; Stalled after `timeout_s`."""
        with self._wake:
            running = self._running
        if running is not None and running.started is not None:
            stuck_for = time.monotonic() - running.started
            if stuck_for > timeout_s:
                # An interrupted loop ends within ~10 ms; one still running after the grace is
                # wedged inside the C library: fail now rather than after a full wait.
                concurrent.futures.wait([running.future], timeout=_GRACE_S)
                if not running.future.done():
                    raise Stalled(f"pyttsx3 has been stuck on one sentence for {stuck_for:.0f} s")
        with self._wake:
            job = _Job(work)
            self._jobs.append(job)
            self._wake.notify()
        try:
            return job.future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            if not job.future.cancel():
                self._interrupt(job)
            raise Stalled(f"pyttsx3 took longer than {timeout_s:g} s for a sentence") from None

    def _interrupt(self, job: _Job) -> None:
        """End the running job's `runAndWait` loop so the engine thread comes back.

        pyttsx3 has no public call for this: `Engine.endLoop` refuses once `runAndWait` has
        processed its own queued end-of-loop command (which it does before synthesising), so
        the driver's `endLoop` (what that command calls) is used, when the driver has one.
        """
        with self._wake:
            if self._running is not job or self._engine is None:
                return
            self._broken = True
            driver = getattr(getattr(self._engine, "proxy", None), "_driver", None)
            end_loop = getattr(driver, "endLoop", None)
            if callable(end_loop):
                end_loop()

    def _serve(self) -> None:
        while True:
            with self._wake:
                while not self._jobs:
                    self._wake.wait()
                job = self._jobs.pop(0)
                if not job.future.set_running_or_notify_cancel():
                    continue  # its caller gave up while it was queued
                self._running = job
                job.started = time.monotonic()
            try:
                self._errors.clear()
                result = job.work(self._ready_engine(), self._errors)
            except BaseException as error:  # handed to the caller, who decides what it means
                with self._wake:
                    self._broken = True
                job.future.set_exception(error)
            else:
                job.future.set_result(result)
            finally:
                with self._wake:
                    self._running = None

    def _ready_engine(self) -> Any:
        with self._wake:
            if self._broken and self._engine is not None:
                LOGGER.warning("pyttsx3: new %s engine after a failed sentence", self.driver)
                self._engine = None
            self._broken = False
        if self._engine is None:
            engine = _build_engine(self.driver, self._errors)
            with self._wake:
                self._engine = engine
        return self._engine


def _build_engine(driver: str, errors: list[BaseException]) -> Any:
    try:
        import pyttsx3

        # Not pyttsx3.init(): it hands back a cached engine while one is alive anywhere.
        engine = pyttsx3.Engine(driver)
    except Exception as error:  # adapter edge: a missing library raises anything from ctypes
        reason = str(error).strip().splitlines()
        hint = " (on Debian: apt-get install libespeak-ng1)" if driver == "espeak" else ""
        raise SpeechError(
            f"pyttsx3 cannot load its {driver!r} driver: "
            f"{type(error).__name__}: {reason[0] if reason else 'no message'}{hint}"
        ) from error
    # setProperty failures (a voice the driver refuses) are only reported as notifications.
    engine.connect("error", lambda name=None, exception=None, **_: errors.append(exception))
    driver_module = sys.modules.get(f"pyttsx3.drivers.{driver}")
    if driver_module is not None and "print" not in vars(driver_module):
        # The espeak driver prints "Audio saved to ..." to stdout for every file; send it to
        # the debug log instead (shadowing the builtin in that module only).
        driver_module.print = _driver_print  # type: ignore[attr-defined]
    return engine


def _driver_print(*args: object, **_: object) -> None:
    LOGGER.debug("pyttsx3 driver: %s", " ".join(str(a) for a in args))


_THREADS: dict[str, _EngineThread] = {}
_THREADS_LOCK = threading.Lock()


def _engine_thread(driver: str | None) -> _EngineThread:
    if driver is None:
        try:
            from pyttsx3.engine import default_engine_by_sys_platform
        except ImportError as error:
            raise SpeechError(f"pyttsx3 is missing or older than 2.99: {error}") from None
        driver = default_engine_by_sys_platform()
    with _THREADS_LOCK:
        if driver not in _THREADS:
            _THREADS[driver] = _EngineThread(driver)
        return _THREADS[driver]


@attrs.frozen
class Pyttsx3Voice:
    id: str  # what the driver's setProperty("voice") takes
    name: str
    language: str  # normalised, "" when the driver does not say


class Pyttsx3Provider:
    """SpeechProvider for pyttsx3. Thread-safe: every engine call goes to its engine thread."""

    name = "pyttsx3"

    def __init__(
        self,
        sample_rate: int,
        voice: str | None = None,
        *,
        driver: str | None = None,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        """Load the driver now. SpeechError (one line) when it cannot load; InvalidSpeechRequest
        when `voice` (a voice id or name, case-insensitive) is not one of its voices."""
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = sample_rate
        self._timeout_s = timeout_s
        self._thread = _engine_thread(driver)
        self._voices = self._call(_read_voices)
        if not self._voices:
            raise SpeechError(f"pyttsx3's {self._thread.driver!r} driver offers no voices")
        self._by_key: dict[str, Pyttsx3Voice] = {}
        for found in self._voices:
            self._by_key.setdefault(found.id.lower(), found)
            self._by_key.setdefault(found.name.lower(), found)
        self._default = self._named(voice) if voice else self._first_default()

    def warm_up(self) -> None:
        """Nothing to load: the driver was loaded when the provider was built."""

    def check_voice(self, voice: str | None, language: str | None) -> None:
        self._voice_for(voice, language)

    def list_voices(self) -> list[VoiceInfo]:
        return [VoiceInfo(v.id, v.name, v.language) for v in self._voices]

    def synthesize_stream(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> Iterator[SpeechChunk]:
        """One chunk per sentence. Bad requests raise here, before the first chunk."""
        chosen = self._voice_for(voice, language)
        return self._stream(chosen, sentences_to_say(text, chosen.language, chosen.id))

    def synthesize(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> SpeechChunk:
        return join_chunks(self.synthesize_stream(text, voice, language))

    def _stream(self, voice: Pyttsx3Voice, sentences: Sequence[str]) -> Iterator[SpeechChunk]:
        for sentence in sentences:
            audio, rate = self._call(functools.partial(_render, voice=voice, sentence=sentence))
            yield SpeechChunk(audio=resample_int16(audio, rate, self.sample_rate))

    def _call(self, work: Callable[[Any, list[BaseException]], T]) -> T:
        try:
            return self._thread.call(work, self._timeout_s)
        except (SpeechError, InvalidSpeechRequest):
            raise
        except Exception as error:  # adapter edge: whatever the driver raised
            raise SpeechError(f"pyttsx3 failed: {type(error).__name__}: {error}") from error

    def _voice_for(self, voice: str | None, language: str | None) -> Pyttsx3Voice:
        if voice:
            chosen = self._named(voice)
        elif language:
            chosen = self._speaking(language)
        else:
            return self._default
        if language and chosen.language and not language_matches(language, chosen.language):
            raise InvalidSpeechRequest(
                f"language {language!r} is not spoken by pyttsx3 voice {voice!r} "
                f"({chosen.language})"
            )
        return chosen

    def _named(self, voice: str) -> Pyttsx3Voice:
        chosen = self._by_key.get(voice.strip().lower())
        if chosen is None:
            english = [v.id for v in self._voices if v.language.startswith("en")]
            examples = ", ".join((english or [v.id for v in self._voices])[:6])
            raise InvalidSpeechRequest(
                f"unknown voice {voice!r} for pyttsx3; available: {examples}, ... "
                "(see `python -m poc voices --provider pyttsx3`)"
            )
        return chosen

    def _speaking(self, language: str) -> Pyttsx3Voice:
        """The default voice if it speaks `language`, else the voice for exactly it, else the
        one named after it (espeak's "roa/fr" speaks fr-fr), else the first of that language."""
        if language_matches(language, self._default.language):
            return self._default
        wanted = normalize_language(language)
        exact = [v for v in self._voices if v.language == wanted]
        named = [v for v in self._voices if v.id.lower().rsplit("/", 1)[-1] == wanted]
        close = [v for v in self._voices if v.language and language_matches(language, v.language)]
        if not exact and not close:
            raise InvalidSpeechRequest(f"language {language!r} has no pyttsx3 voice")
        return (exact or [v for v in named if v in close] or close)[0]

    def _first_default(self) -> Pyttsx3Voice:
        for found in self._voices:
            if found.language == DEFAULT_LANGUAGE:
                return found
        return self._voices[0]


def _read_voices(engine: Any, errors: list[BaseException]) -> list[Pyttsx3Voice]:
    voices = []
    for found in engine.getProperty("voices"):
        if str(found.id).lower().startswith(_MISLABELLED_PREFIX):
            continue
        languages = [str(x) for x in (found.languages or []) if x]
        language = normalize_language(languages[0]) if languages else ""
        voices.append(Pyttsx3Voice(str(found.id), str(found.name or found.id), language))
    return voices


def _render(
    engine: Any, errors: list[BaseException], voice: Pyttsx3Voice, sentence: str
) -> tuple[np.ndarray, int]:
    """One sentence through the engine into a WAV file, read back: (mono int16, its rate)."""
    with tempfile.TemporaryDirectory(prefix="poc-pyttsx3-") as folder:
        path = Path(folder) / "speech.wav"
        engine.setProperty("voice", voice.id)
        engine.save_to_file(sentence, str(path))
        engine.runAndWait()
        if errors:
            raise SpeechError(f"pyttsx3 failed to speak with voice {voice.id!r}: {errors[0]}")
        if not path.is_file():
            raise SpeechError("pyttsx3 finished without writing its audio file")
        try:
            audio, rate = soundfile.read(path, dtype="int16", always_2d=True)
        except (RuntimeError, ValueError) as error:
            raise SpeechError(f"pyttsx3 wrote an unreadable WAV: {error}") from error
    if len(audio) == 0:
        # The sentence has letters or digits (require_speakable), so silence is a driver fault.
        raise SpeechError(f"pyttsx3 produced no audio for a sentence with voice {voice.id!r}")
    return audio[:, 0], int(rate)
