"""TTS_CHANNELS at the writer: a stereo track carries the mono speech centred, at its own level.

The writer encodes to an FLV file here (ffmpeg treats the URL as a path), so the real ffmpeg
and ffprobe check what a viewer would get without an RTMP server.
"""

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from poc.media.writer import FfmpegWriter
from poc.metrics import Metrics

pytestmark = pytest.mark.integration

RATE, FPS, SECONDS = 44100, 25, 2
TONE_PEAK = 8000


def tone() -> np.ndarray:
    t = np.arange(RATE * SECONDS) / RATE
    return (TONE_PEAK * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


def encode(out: Path, **writer_args) -> Path:
    ffmpeg = shutil.which("ffmpeg") or pytest.skip("ffmpeg not installed")
    writer = FfmpegWriter(ffmpeg, str(out), out.name, 64, 64, FPS, RATE, Metrics(),
                          queue_frames=FPS * SECONDS + 1, **writer_args)  # fmt: skip
    writer.start()
    picture = np.zeros((64, 64, 3), np.uint8)
    per_frame = RATE // FPS
    audio = tone()
    for k in range(FPS * SECONDS):
        assert writer.offer(picture, audio[k * per_frame : (k + 1) * per_frame])
    writer.close(timeout=10)
    deadline = time.monotonic() + 10
    while not (out.is_file() and out.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.05)
    return out


def audio_stream(path: Path) -> dict:
    data = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_streams", "-of", "json", str(path)],
        check=True, capture_output=True, timeout=30,
    ).stdout)  # fmt: skip
    return data["streams"][0]


def decoded(path: Path, channels: int) -> np.ndarray:
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "s16le", "-ac", str(channels), "-"],
        check=True, capture_output=True, timeout=30,
    ).stdout  # fmt: skip
    return np.frombuffer(raw, np.int16).reshape(-1, channels).astype(np.float64)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def test_default_track_is_mono(tmp_path):
    stream = audio_stream(encode(tmp_path / "mono.flv"))
    assert stream["channels"] == 1 and stream["sample_rate"] == str(RATE)


def test_stereo_track_has_the_speech_centred_at_the_mono_level(tmp_path):
    path = encode(tmp_path / "stereo.flv", channels=2)
    stream = audio_stream(path)
    assert stream["channels"] == 2 and stream["channel_layout"] == "stereo"

    both = decoded(path, 2)
    middle = both[RATE // 4 : -RATE // 4]  # skip the encoder's priming and the tail
    left, right = middle[:, 0], middle[:, 1]
    source = rms(tone().astype(np.float64))
    # centred: the two channels carry the same signal (AAC may code them as mid/side)
    assert rms(left - right) < 0.01 * source
    # at the mono level: neither channel is attenuated (ffmpeg's plain upmix would be -3 dB)
    assert rms(left) == pytest.approx(source, rel=0.06) and rms(right) == pytest.approx(source, rel=0.06)


def test_channels_other_than_one_or_two_are_refused():
    with pytest.raises(ValueError, match="channels must be 1 or 2"):
        FfmpegWriter("ffmpeg", "x.flv", "x.flv", 64, 64, FPS, RATE, Metrics(), channels=6)
