"""A robotic but tiny and near-instant offline voice: the espeak-ng binary.

espeak-ng is run once per sentence (argument list, text on stdin so nothing in it is read as an
option, WAV to a temporary file so the header is complete) and costs tens of milliseconds per
call. It gives no phoneme timings we could use, so its chunks carry no phoneme marks. Voices are
whatever `espeak-ng --voices` lists: a language ("en-us"), a voice name ("English_(America)"),
a voice file ("gmw/en-US") or an alternative language code it lists ("en"). An English voice is
given prices, units, phone numbers and times in words first (`english_numbers`).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs
import numpy as np
import soundfile

from poc.speech.base import InvalidSpeechRequest, SpeechChunk, SpeechError, VoiceInfo
from poc.speech.local_text import sentences_to_say
from poc.speech.resample import resample_int16
from poc.speech.sentences import (
    join_chunks,
    language_matches,
    normalize_language,
)

DEFAULT_VOICE = "en-us"
TIMEOUT_S = 30.0


@attrs.frozen
class EspeakVoice:
    argument: str  # what to pass to -v
    language: str  # the voice's own language, normalised


class EspeakProvider:
    """SpeechProvider for the espeak-ng command-line synthesiser."""

    name = "espeak"

    def __init__(self, sample_rate: int, voice: str | None = None, binary: str = "espeak-ng"):
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = sample_rate
        self._default = voice or DEFAULT_VOICE
        self._binary = binary
        self._voices: dict[str, EspeakVoice] | None = None
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Nothing to load: espeak-ng starts per sentence."""

    def check_voice(self, voice: str | None, language: str | None) -> None:
        self._voice_for(voice, language)

    def synthesize_stream(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> Iterator[SpeechChunk]:
        """One chunk per sentence. Bad requests raise here, before the first chunk."""
        chosen = self._voice_for(voice, language)
        return self._stream(chosen, sentences_to_say(text, chosen.language, chosen.argument))

    def synthesize(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> SpeechChunk:
        return join_chunks(self.synthesize_stream(text, voice, language))

    def list_voices(self) -> list[VoiceInfo]:
        """Every voice `espeak-ng --voices` lists; the id is what TTS_VOICE / -v takes."""
        listing = self._run([self._executable(), "--voices"], b"")
        return voice_infos(listing.decode("utf-8", "replace"))

    def available_voices(self) -> dict[str, EspeakVoice]:
        """Every name espeak-ng accepts for -v (lower-case) -> the voice it selects."""
        with self._lock:
            if self._voices is None:
                listing = self._run([self._executable(), "--voices"], b"")
                self._voices = parse_voice_list(listing.decode("utf-8", "replace"))
            return self._voices

    def _voice_for(self, voice: str | None, language: str | None) -> EspeakVoice:
        voices = self.available_voices()
        if not voice and language:
            # No voice asked for: speak the language itself if espeak-ng has it.
            chosen = voices.get(normalize_language(language))
            if chosen is None:
                raise InvalidSpeechRequest(f"language {language!r} has no espeak-ng voice")
            return chosen
        name = voice or self._default
        chosen = voices.get(name.strip().lower()) or voices.get(normalize_language(name))
        if chosen is None:
            examples = ", ".join(sorted(k for k in voices if k.startswith("en"))[:6])
            raise InvalidSpeechRequest(
                f"unknown voice {name!r} for espeak; available: {examples}, ... "
                "(see `espeak-ng --voices`)"
            )
        if language and not language_matches(language, chosen.language):
            raise InvalidSpeechRequest(
                f"language {language!r} is not spoken by espeak voice {name!r} ({chosen.language})"
            )
        return chosen

    def _stream(self, voice: EspeakVoice, sentences: Sequence[str]) -> Iterator[SpeechChunk]:
        for sentence in sentences:
            audio = self._speak(voice, sentence)
            if len(audio):
                yield SpeechChunk(audio=audio)

    def _speak(self, voice: EspeakVoice, sentence: str) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="poc-espeak-") as folder:
            wav = Path(folder) / "speech.wav"
            command = [
                self._executable(), "-v", voice.argument, "-b", "1", "-w", str(wav), "--stdin",
            ]  # fmt: skip
            self._run(command, sentence.encode("utf-8"))
            try:
                audio, rate = soundfile.read(wav, dtype="int16", always_2d=True)
            except (RuntimeError, ValueError) as error:
                raise SpeechError(f"espeak-ng wrote an unreadable WAV: {error}") from error
        return resample_int16(audio[:, 0], rate, self.sample_rate)

    def _executable(self) -> str:
        found = shutil.which(self._binary)
        if found is None:
            raise SpeechError(
                f"espeak-ng is not installed: no {self._binary!r} on PATH "
                "(apt-get install espeak-ng)"
            )
        return found

    def _run(self, command: list[str], stdin: bytes) -> bytes:
        try:
            result = subprocess.run(
                command, input=stdin, capture_output=True, timeout=TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            raise SpeechError(f"espeak-ng took longer than {TIMEOUT_S:.0f} s") from None
        except OSError as error:
            raise SpeechError(f"cannot run espeak-ng: {error}") from error
        if result.returncode != 0:
            reason = result.stderr.decode("utf-8", "replace").strip().splitlines()
            raise SpeechError(
                f"espeak-ng failed (exit {result.returncode}): "
                f"{reason[-1] if reason else 'no message'}"
            )
        return result.stdout


def parse_voice_list(listing: str) -> dict[str, EspeakVoice]:
    """Names -> voices from `espeak-ng --voices` output.

    Columns: Pty, Language, Age/Gender, VoiceName, File, then "(code priority)" alternatives.
    Names use underscores for spaces, so splitting on whitespace is safe. When an alternative
    code ("en") is shared, the voice listed with the best (lowest) priority for it wins.
    """
    voices: dict[str, EspeakVoice] = {}
    alternatives: dict[str, tuple[int, EspeakVoice]] = {}
    for line in listing.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 5:
            continue
        language, voice_name, file_name = fields[1], fields[3], fields[4]
        voice = EspeakVoice(argument=language, language=normalize_language(language))
        for key in (language, voice_name, file_name):
            voices.setdefault(key.lower(), voice)
        extras = " ".join(fields[5:]).replace("(", " ").replace(")", " ").split()
        for code, priority in zip(extras[::2], extras[1::2], strict=False):
            rank = int(priority) if priority.isdigit() else 99
            if code.lower() not in alternatives or rank < alternatives[code.lower()][0]:
                alternatives[code.lower()] = (rank, voice)
    for code, (_, voice) in alternatives.items():
        voices.setdefault(code, voice)
    return voices


def voice_infos(listing: str) -> list[VoiceInfo]:
    """One VoiceInfo per row of `espeak-ng --voices`, in its order: id = the language column
    (what -v takes), or the voice file where an earlier row already took that language, so
    every id selects its own voice; names with spaces as espeak-ng's own display shows them."""
    voices: list[VoiceInfo] = []
    taken: set[str] = set()
    for line in listing.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 5:
            continue
        language, voice_name, file_name = fields[1], fields[3], fields[4]
        voice_id = language if language.lower() not in taken else file_name
        taken.add(voice_id.lower())
        name = voice_name.replace("_", " ")
        voices.append(VoiceInfo(voice_id, name, normalize_language(language)))
    return voices
