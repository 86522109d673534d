"""Read a live RTMP stream back with real ffmpeg/ffprobe and measure it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import attrs
import numpy as np

# Joining mid-stream: probe long enough to see the video track (platform notes §9).
_JOIN = ["-analyzeduration", "3000000", "-probesize", "5000000", "-fpsprobesize", "0"]


def ffmpeg() -> str:
    return shutil.which("ffmpeg") or "ffmpeg"


def ffprobe() -> str:
    return shutil.which("ffprobe") or "ffprobe"


def _record_command(url: str, seconds: float, out: Path) -> list[str]:
    """Copy `seconds` of the live stream into a Matroska file (timestamps kept exactly)."""
    return [
        ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-rw_timeout", "10000000",
        *_JOIN, "-i", url, "-t", str(seconds), "-c", "copy", "-f", "matroska", str(out),
    ]  # fmt: skip


def record(url: str, seconds: float, out: Path, timeout: float | None = None) -> Path:
    subprocess.run(_record_command(url, seconds, out), check=True, timeout=timeout or seconds + 30,
                   capture_output=True)  # fmt: skip
    return out


def start_recording(url: str, seconds: float, out: Path) -> subprocess.Popen:
    return subprocess.Popen(_record_command(url, seconds, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@attrs.frozen
class StreamFacts:
    width: int
    height: int
    fps: float
    video_pts: list[float]
    audio_rate: int
    audio_samples: int
    audio_start: float

    @property
    def video_seconds(self) -> float:
        fps = self.fps
        return (self.video_pts[-1] - self.video_pts[0]) + 1 / fps if self.video_pts else 0.0

    @property
    def audio_seconds(self) -> float:
        return self.audio_samples / self.audio_rate

    def largest_video_gap(self) -> float:
        pts = sorted(self.video_pts)
        return max((b - a for a, b in zip(pts, pts[1:])), default=0.0)


def probe(path: Path) -> StreamFacts:
    out = subprocess.run(
        [ffprobe(), "-v", "error", "-show_streams", "-show_packets", "-of", "json", str(path)],
        check=True, capture_output=True, timeout=60,
    ).stdout  # fmt: skip
    data = json.loads(out)
    video = next(s for s in data["streams"] if s["codec_type"] == "video")
    audio = next(s for s in data["streams"] if s["codec_type"] == "audio")
    num, den = video.get("r_frame_rate", "0/1").split("/")
    video_pts = [
        float(p["pts_time"]) for p in data["packets"] if p["stream_index"] == video["index"] and "pts_time" in p
    ]
    audio_pts = [
        float(p["pts_time"]) for p in data["packets"] if p["stream_index"] == audio["index"] and "pts_time" in p
    ]
    samples = decode_audio(path).size
    return StreamFacts(
        width=int(video["width"]),
        height=int(video["height"]),
        fps=float(num) / float(den) if float(den) else 0.0,
        video_pts=video_pts,
        audio_rate=int(audio["sample_rate"]),
        audio_samples=samples,
        audio_start=min(audio_pts) if audio_pts else 0.0,
    )


def decode_audio(path: Path, rate: int | None = None) -> np.ndarray:
    """The whole audio track as mono int16 (counting decoded samples, not packet durations)."""
    command = [ffmpeg(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1"]
    if rate:
        command += ["-ar", str(rate)]
    command += ["-f", "s16le", "-"]
    raw = subprocess.run(command, check=True, capture_output=True, timeout=60).stdout
    return np.frombuffer(raw, dtype=np.int16)


def decode_video_gray(path: Path, width: int, height: int, box: tuple[int, int, int, int] | None = None,
                      fps: int | None = None) -> np.ndarray:
    """Decoded frames as grayscale uint8 (N, h, w), optionally cropped to box=(x, y, w, h)."""
    vf = []
    if box:
        x, y, w, h = box
        vf.append(f"crop={w}:{h}:{x}:{y}")
        width, height = w, h
    command = [ffmpeg(), "-v", "error", "-i", str(path), "-map", "0:v:0"]
    if fps:
        vf.append(f"fps={fps}")
    else:
        command += ["-fps_mode", "passthrough"]  # one output frame per coded frame, no padding
    if vf:
        command += ["-vf", ",".join(vf)]
    command += ["-f", "rawvideo", "-pix_fmt", "gray", "-"]
    raw = subprocess.run(command, check=True, capture_output=True, timeout=120).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, height, width)


def speech_spans(samples: np.ndarray, rate: int, window: float = 0.05, threshold: int = 300) -> list[tuple[float, float]]:
    """(start, end) seconds of stretches where the audio is not silent."""
    step = max(1, int(rate * window))
    n = len(samples) // step
    if n == 0:
        return []
    loud = np.abs(samples[: n * step].reshape(n, step).astype(np.int32)).max(axis=1) > threshold
    spans, start = [], None
    for i, is_loud in enumerate(loud):
        if is_loud and start is None:
            start = i
        elif not is_loud and start is not None:
            spans.append((start * window, i * window))
            start = None
    if start is not None:
        spans.append((start * window, n * window))
    return spans
