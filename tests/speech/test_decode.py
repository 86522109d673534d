"""Audio messages decode to mono int16 at the stream rate, or fail with one clear line."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile

from poc.speech.decode import InvalidAudio, decode_audio

from .audio_helpers import band_level, dominant_frequency, encode_with_ffmpeg, rms

FORMATS = ["wav", "flac", "ogg", "mp3", "opus", "webm", "m4a"]
SINE_RMS = 32767 / 8 / np.sqrt(2)  # ffmpeg's sine source has amplitude 1/8


@pytest.fixture(scope="module")
def sines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """One second of 440 Hz at 44.1 kHz, encoded by ffmpeg in every accepted format."""
    tmp = tmp_path_factory.mktemp("sines")
    source = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=1"]
    return {fmt: encode_with_ffmpeg(tmp, f"sine.{fmt}", source) for fmt in FORMATS}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rate", [48000, 44100])
def test_each_format_round_trips_pitch_length_and_level(
    sines: dict[str, bytes], fmt: str, rate: int
) -> None:
    audio = decode_audio(sines[fmt], fmt, rate, max_seconds=5)
    assert audio.dtype == np.int16 and audio.ndim == 1
    assert len(audio) / rate == pytest.approx(1.0, abs=0.05)  # codecs pad by a few ms
    steady = audio[rate // 10 : -rate // 10]
    assert dominant_frequency(steady, rate) == pytest.approx(440.0, abs=1.0)
    assert rms(steady) == pytest.approx(SINE_RMS, rel=0.1)


def test_stereo_is_mixed_to_mono_by_averaging(tmp_path: Path) -> None:
    # 440 Hz left, 1000 Hz right, each at 1/8: both halves must survive, at half the level.
    source = [
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=1",
        "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000:duration=1",
        "-filter_complex", "[0][1]amerge=inputs=2",
    ]  # fmt: skip
    for fmt in ("wav", "m4a"):  # one in process (soundfile), one through ffmpeg
        data = encode_with_ffmpeg(tmp_path, f"stereo.{fmt}", source)
        audio = decode_audio(data, fmt, 48000, max_seconds=5)[4800:-4800]
        assert band_level(audio, 48000, 400, 480) == pytest.approx(SINE_RMS / 2, rel=0.1)
        assert band_level(audio, 48000, 950, 1050) == pytest.approx(SINE_RMS / 2, rel=0.1)


def test_float_audio_beyond_full_scale_is_clipped_not_wrapped() -> None:
    t = np.arange(16000) / 16000
    loud = 1.5 * np.sin(2 * np.pi * 200 * t)
    buffer = io.BytesIO()
    soundfile.write(buffer, loud.astype(np.float32), 16000, format="WAV", subtype="FLOAT")
    audio = decode_audio(buffer.getvalue(), "wav", 16000, max_seconds=5)
    assert audio.max() == 32767 and audio.min() == -32767
    strong = np.abs(loud) > 0.1
    assert (np.sign(audio[strong]) == np.sign(loud[strong])).all()


def test_format_names_are_forgiving_about_case_dots_and_mime(sines: dict[str, bytes]) -> None:
    for name in ("WAV", ".wav", "audio/wav", "wave"):
        assert len(decode_audio(sines["wav"], name, 16000, max_seconds=5)) == 16000


def _wav(
    payload: bytes = b"\x00\x01" * 800,
    channels: int = 1,
    rate: int = 16000,
    bits: int = 16,
    data_size: int | None = None,
    riff_size: int | None = None,
) -> bytes:
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * align, align, bits)
    size = len(payload) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", size)
    body += payload
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


def test_a_well_formed_handmade_wav_decodes() -> None:
    """The bad cases below differ from this one only in the field they break."""
    assert len(decode_audio(_wav(), "wav", 16000, max_seconds=5)) == 800


def _truncated_fmt_chunk() -> bytes:
    data = _wav()[:30]
    return data[:4] + struct.pack("<I", len(data) - 8) + data[8:]


BAD_CASES = [
    (b"", "wav", "empty"),
    (b"", "mp3", "empty"),
    (b"definitely not audio " * 50, "wav", "not a WAV file"),
    (_wav(data_size=5000), "wav", "declares 5000 bytes of audio but only 1600"),
    (_wav(payload=b"\x00" * 1601), "wav", "not a whole number of 2-byte frames"),
    (_wav(channels=0), "wav", "0 channels"),
    (_wav(rate=0), "wav", "sample rate of 0"),
    (_wav(riff_size=99999), "wav", "declares 100007 bytes but the message has 1644"),
    (_wav()[:30], "wav", "declares 1644 bytes but the message has 30"),
    (_truncated_fmt_chunk(), "wav", "'fmt ' chunk is truncated"),
    (_wav(payload=b""), "wav", "holds no samples"),
    (_wav(), "aiff", "unsupported audio format 'aiff'"),
    (_wav(), "", "unsupported audio format ''"),
]


@pytest.mark.parametrize(("data", "fmt", "reason"), BAD_CASES, ids=[c[2] for c in BAD_CASES])
def test_bad_wav_and_format_cases_fail_with_a_clear_line(
    data: bytes, fmt: str, reason: str
) -> None:
    with pytest.raises(InvalidAudio, match=reason) as caught:
        decode_audio(data, fmt, 16000, max_seconds=5)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("fmt", ["flac", "ogg", "mp3", "opus", "webm", "m4a"])
def test_undecodable_bytes_fail_with_a_clear_line(fmt: str) -> None:
    garbage = np.random.default_rng(7).integers(0, 256, 20000, dtype=np.uint8).tobytes()
    with pytest.raises(InvalidAudio, match=f"cannot decode {fmt} audio: .+") as caught:
        decode_audio(garbage, fmt, 16000, max_seconds=5)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 260


def test_truncated_compressed_audio_fails_or_decodes_only_what_is_there(
    sines: dict[str, bytes],
) -> None:
    try:
        audio = decode_audio(sines["mp3"][:1500], "mp3", 16000, max_seconds=5)
    except InvalidAudio as error:
        assert "mp3" in str(error)
    else:
        assert 0 < len(audio) < 16000 * 0.5


@pytest.mark.parametrize(
    ("fmt", "says"),
    [
        ("wav", r"1\.0 s long, more than"),
        ("flac", r"1\.0 s long, more than"),
        # ffmpeg stops decoding a little past the limit: cut there, the length is not known
        ("mp3", r"(1\.0 s long, more|longer) than"),
        ("m4a", r"(1\.0 s long, more|longer) than"),
        ("webm", r"(1\.0 s long, more|longer) than"),
    ],
)
def test_audio_longer_than_the_limit_is_refused(sines: dict[str, bytes], fmt: str, says: str) -> None:
    with pytest.raises(InvalidAudio, match=says + r" the 0\.5 s allowed"):
        decode_audio(sines[fmt], fmt, 16000, max_seconds=0.5)
    assert len(decode_audio(sines[fmt], fmt, 16000, max_seconds=1.1)) > 0
