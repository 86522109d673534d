"""Measurements the vendor end-to-end tests make on what was read back from the RTMP server:
loudness envelopes to find a vendor's audio in the stream, colour frames to find a vendor's
video mark, and values from the service's /metrics page."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from support.stream import ffmpeg


def envelope(samples: np.ndarray, rate: int, window: float = 0.02) -> np.ndarray:
    """RMS of each `window`-second slice of int16 samples (AAC keeps this shape, not the samples)."""
    step = max(1, round(rate * window))
    n = len(samples) // step
    blocks = samples[: n * step].astype(np.float64).reshape(n, step)
    return np.sqrt((blocks**2).mean(axis=1))


def best_alignment(heard: np.ndarray, expected: np.ndarray) -> tuple[int, float]:
    """(offset in values, Pearson correlation) where envelope `expected` best matches a stretch
    of envelope `heard`. Correlation is scale-free, so the stream's gain does not matter."""
    m = len(expected)
    if m < 2 or len(heard) < m:
        return 0, 0.0
    e = expected - expected.mean()
    e_norm = np.linalg.norm(e)
    best = (0, -1.0)
    for lag in range(len(heard) - m + 1):
        part = heard[lag : lag + m]
        p = part - part.mean()
        denominator = np.linalg.norm(p) * e_norm
        if denominator > 0:
            score = float(p @ e / denominator)
            if score > best[1]:
                best = (lag, score)
    return best


def locate(heard: np.ndarray, expected: np.ndarray, rate: int, window: float = 0.02) -> tuple[float, float]:
    """(seconds into `heard`, envelope correlation) where the samples `expected` are heard.

    Found on `window`-second envelopes, then refined to a millisecond: envelopes cut on
    different grids blur sharp onsets, which would understate a true match."""
    step = max(1, round(rate * window))
    target = envelope(expected, rate, window)
    lag, _ = best_alignment(envelope(heard, rate, window), target)
    best = (lag * step, -1.0)
    for start in range(max(0, lag * step - step), lag * step + step + 1, max(1, rate // 1000)):
        part = heard[start : start + len(expected)]
        if len(part) < len(expected):
            break
        score = float(np.corrcoef(envelope(part, rate, window), target)[0, 1])
        if score > best[1]:
            best = (start, score)
    return best[0] / rate, best[1]


def decode_video_bgr(path: Path, width: int, rows: int) -> np.ndarray:
    """The top `rows` rows of every coded frame of the video track as BGR (N, rows, width, 3)."""
    command = [
        ffmpeg(), "-v", "error", "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough",
        "-vf", f"crop={width}:{rows}:0:0", "-f", "rawvideo", "-pix_fmt", "bgr24", "-",
    ]  # fmt: skip
    raw = subprocess.run(command, check=True, capture_output=True, timeout=120).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, rows, width, 3)


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0 when none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
