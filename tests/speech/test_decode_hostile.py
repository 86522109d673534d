"""Small audio messages that claim a lot are refused with one clear line, before the work.

Each hostile file here is a few KB, built in the test. Against the decoder before these limits,
the same files cost (numpy allocations, as counted by tracemalloc here): a 2^31 Hz WAV, a
12.9 GB kernel table; a FLAC whose header claims 60 s of 8 channels at 384 kHz, a 737 MB read
buffer; a FLAC without a length, a refusal saying it was 1152921504606847 s long. The peak
checks below are what keeps those regressions from coming back quietly.
"""

from __future__ import annotations

import io
import struct
import subprocess
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile

from poc.speech import decode
from poc.speech.decode import InvalidAudio, decode_audio
from poc.speech.resample import MAX_DOWNSAMPLING, _kernel_table, resample_int16

from .audio_helpers import encode_with_ffmpeg

MB = 1 << 20


def _wav(rate: int, frames: int, channels: int = 1) -> bytes:
    """A 16-bit PCM WAV whose header claims `rate` (any 32-bit value), holding `frames` frames."""
    align = channels * 2
    payload = b"\x01\x00" * (frames * channels)
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * align & 0xFFFFFFFF, align, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
    body += b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _float_wav(samples: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples.astype(np.float32), rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def _flac(rate: int, channels: int, seconds: float, tone: bool = False) -> bytes:
    """FLAC of silence (or a 440 Hz tone), written a second at a time to keep the test small."""
    buffer = io.BytesIO()
    total = round(rate * seconds)
    with soundfile.SoundFile(buffer, "w", rate, channels, format="FLAC", subtype="PCM_16") as out:
        for first in range(0, total, rate):
            n = min(rate, total - first)
            block = np.zeros((n, channels), np.float32)
            if tone:
                t = np.arange(first, first + n) / rate
                block[:] = 0.25 * np.sin(2 * np.pi * 440 * t)[:, None]
            out.write(block)
    return buffer.getvalue()


def _with_flac_total(data: bytes, total: int) -> bytes:
    """`data` with STREAMINFO's 36-bit total-samples field set to `total` (0: unknown length)."""
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO is the first block
    field = int.from_bytes(data[18:26], "big")  # rate/channels/bits, then the 36 bits of total
    field = (field & ~((1 << 36) - 1)) | total
    return data[:18] + field.to_bytes(8, "big") + data[26:]


def _peak_bytes(action: Callable[[], object]) -> int:
    """Peak traced (numpy and Python) allocation while `action` runs, exceptions included."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        action()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        if started:
            tracemalloc.stop()
    return peak


def _refusal(
    data: bytes, fmt: str, max_seconds: float = 60.0, rate: int = 44100
) -> tuple[str, int]:
    """The InvalidAudio line decoding gives, and the peak allocation while it was found."""
    caught: list[InvalidAudio] = []

    def attempt() -> None:
        try:
            decode_audio(data, fmt, rate, max_seconds)
        except InvalidAudio as error:
            caught.append(error)

    peak = _peak_bytes(attempt)
    assert caught, "the hostile audio was accepted"
    line = str(caught[0])
    assert "\n" not in line and len(line) < 200
    return line, peak


# --- sample rate ---------------------------------------------------------------------------


def test_a_wav_claiming_2_gigahertz_is_refused_before_any_work() -> None:
    line, peak = _refusal(_wav(2_147_483_647, frames=50_000), "wav")
    assert "sample rate 2147483647 Hz is outside the 1000..384000 Hz accepted" in line
    assert peak < 2 * MB  # the old decoder started on a 12.9 GB kernel table


@pytest.mark.parametrize("rate", [0, 1, 999, 384_001, 20_000_003, 4_294_967_295])
def test_wav_rates_outside_the_range_are_refused(rate: int) -> None:
    line, peak = _refusal(_wav(rate, frames=100), "wav")
    assert f"{rate} Hz" in line
    assert peak < 2 * MB


@pytest.mark.parametrize("rate", [1000, 8000, 22050, 48000, 96000, 384_000])
def test_rates_inside_the_range_decode(rate: int) -> None:
    audio = decode_audio(_wav(rate, frames=rate // 10), "wav", 16000, max_seconds=5)
    assert len(audio) == 1600


def test_a_flac_at_655_khz_is_refused_by_its_rate_before_reading() -> None:
    # The review's bomb: 60 s of 8 channels at 655,350 Hz was 343 KB and decoded to 1.76 GB.
    # 0.1 s shows the same refusal; the header check comes before any frame is read.
    line, peak = _refusal(_flac(655_350, 8, 0.1), "flac")
    assert "sample rate 655350 Hz is outside" in line
    assert peak < 2 * MB


# --- decoded samples (frames x channels) ---------------------------------------------------


def test_a_flac_header_claiming_a_huge_length_is_refused_before_reading() -> None:
    # 0.1 s of 8 channels at 384 kHz whose header claims 60 s: within the duration limit, but
    # soundfile would allocate the claimed 184 M samples (737 MB) before reading.
    data = _with_flac_total(_flac(384_000, 8, 0.1), 60 * 384_000)
    assert len(data) < 50_000
    line, peak = _refusal(data, "flac", max_seconds=60)
    assert line == (
        "audio decodes to 184320000 samples (8 channel(s)), more than the 11520000 a 60 s "
        "message may hold (96 kHz stereo's worth): downmix it to mono or stereo, or send it shorter"
    )
    assert peak < 2 * MB


def test_many_channels_only_allow_a_shorter_message() -> None:
    # The budget is the allowed length as 96 kHz stereo: 0.5 s -> 96,000 samples.
    eight = _flac(48_000, 8, 0.3)  # 115,200 samples
    line, _ = _refusal(eight, "flac", max_seconds=0.5)
    assert "decodes to 115200 samples (8 channel(s)), more than the 96000" in line
    assert len(decode_audio(_flac(48_000, 2, 0.3), "flac", 48000, max_seconds=0.5)) == 14400
    assert len(decode_audio(eight, "flac", 48000, max_seconds=1.0)) == 14400


def test_ffmpeg_output_is_capped_at_the_sample_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # webm goes through ffmpeg, which keeps the source's channels: 0.4 s of 7.1 at 48 kHz is
    # 153,600 samples. With 0.5 s allowed (96,000 samples) ffmpeg must stop writing near the
    # budget rather than hand over everything, and the message is refused.
    data = encode_with_ffmpeg(tmp_path, "surround.webm", [
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=0.4",
        "-filter_complex", "[0]aformat=channel_layouts=7.1", "-c:a", "libopus",
    ])  # fmt: skip
    outputs: list[int] = []
    real_run = subprocess.run

    def run(*args: object, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        result = real_run(*args, **kwargs)  # type: ignore[call-overload]
        outputs.append(len(result.stdout))
        return result

    monkeypatch.setattr(decode.subprocess, "run", run)
    line, _ = _refusal(data, "webm", max_seconds=0.5, rate=48000)
    assert "(8 channel(s)), more than the 96000 a 0.5 s message may hold" in line
    assert outputs and outputs[-1] < 4 * 96_000 + 2 * 65_536  # not the 614 KB it decodes to
    assert len(decode_audio(data, "webm", 48000, max_seconds=2)) == pytest.approx(19200, abs=960)


# --- unknown length ------------------------------------------------------------------------


def test_a_flac_without_a_length_decodes_like_one_with_it() -> None:
    # Encoders writing to a pipe leave the total at 0; libsndfile then says SF_COUNT_MAX frames.
    original = _flac(16000, 1, 1.0, tone=True)
    piped = _with_flac_total(original, 0)
    assert soundfile.info(io.BytesIO(piped)).frames > 10**18  # the case this is about
    expected = decode_audio(original, "flac", 16000, max_seconds=5)
    assert len(expected) == 16000
    np.testing.assert_array_equal(decode_audio(piped, "flac", 16000, max_seconds=5), expected)
    np.testing.assert_array_equal(decode_audio(piped, "flac", 16000, max_seconds=1), expected)


def test_a_flac_without_a_length_is_judged_by_what_it_holds_reading_little() -> None:
    # 10 minutes (4.8 M frames, 19 MB as float) against a 1 s limit: read 8,001 frames, refuse.
    piped = _with_flac_total(_flac(8000, 1, 600), 0)
    line, peak = _refusal(piped, "flac", max_seconds=1)
    assert line == "audio is longer than the 1 s allowed (its header gives no length)"
    assert peak < 2 * MB


def test_a_flac_without_a_length_still_has_a_sample_budget() -> None:
    piped = _with_flac_total(_flac(48_000, 8, 0.3), 0)
    line, _ = _refusal(piped, "flac", max_seconds=0.5)
    assert "(8 channel(s)), more than the 96000 a 0.5 s message may hold" in line


# --- samples that are not numbers ----------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_audio_that_is_all_nan_or_inf_is_refused(bad: float) -> None:
    line, _ = _refusal(_float_wav(np.full(16000, bad)), "wav")
    assert line == "audio is not sound: 100% of its samples are NaN or infinite"


def test_audio_mostly_not_numbers_is_refused() -> None:
    samples = np.full(1000, 0.5)
    samples[:600] = np.nan
    line, _ = _refusal(_float_wav(samples), "wav")
    assert "60% of its samples are NaN or infinite" in line


def test_stray_nan_and_inf_samples_become_silence() -> None:
    samples = np.full(16000, 0.5)
    bad = np.zeros(16000, bool)
    bad[[10, 500, 9000]] = True
    samples[10], samples[500], samples[9000] = np.nan, np.inf, -np.inf
    audio = decode_audio(_float_wav(samples), "wav", 16000, max_seconds=5)
    assert (audio[bad] == 0).all()  # not a full-scale click for the infinities
    assert (audio[~bad] == round(0.5 * 32767)).all()


# --- the resampler bounds its own memory ---------------------------------------------------


def test_the_resampler_refuses_an_unbounded_ratio_at_once() -> None:
    with pytest.raises(ValueError, match=f"at most {MAX_DOWNSAMPLING}x"):
        resample_int16(np.zeros(100_000, np.int16), 2_147_483_647, 44100)


def test_the_widest_allowed_kernel_is_small_and_not_cached() -> None:
    # The decoder's extreme: 384 kHz (coprime, so all 1024 phases) down to an 8 kHz stream.
    peak = _peak_bytes(lambda: _kernel_table(8000, 383_999))
    table, _ = _kernel_table(8000, 383_999)
    assert table.nbytes < 8 * MB and peak < 2 * table.nbytes + 4 * MB
    assert _kernel_table(8000, 383_999)[0] is not table  # large tables are not kept alive
    assert _kernel_table(2, 1)[0] is _kernel_table(2, 1)[0]  # realistic pairs are cached


def test_decoding_at_the_highest_rate_stays_small() -> None:
    data = _wav(384_000, frames=384_000)  # 1 s at the top of the range, to an 8 kHz stream
    peak = _peak_bytes(lambda: decode_audio(data, "wav", 8000, max_seconds=5))
    assert peak < 40 * MB
