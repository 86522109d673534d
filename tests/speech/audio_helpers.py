"""Measurements the speech tests share: what a listener would notice, computed from samples."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from poc.speech.decode import find_ffmpeg


def dominant_frequency(audio: np.ndarray, rate: int) -> float:
    """The strongest frequency in `audio`, to a fraction of a hertz (parabolic peak fit)."""
    samples = audio.astype(np.float64) * np.hanning(len(audio))
    spectrum = np.abs(np.fft.rfft(samples))
    peak = int(np.argmax(spectrum[1:-1])) + 1
    left, centre, right = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
    shift = 0.5 * (left - right) / (left - 2 * centre + right)
    return float((peak + shift) * rate / len(audio))


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if len(audio) else 0.0


def band_level(audio: np.ndarray, rate: int, low: float, high: float) -> float:
    """RMS of the part of `audio` between `low` and `high` Hz."""
    spectrum = np.fft.rfft(audio.astype(np.float64))
    freqs = np.fft.rfftfreq(len(audio), 1 / rate)
    spectrum[(freqs < low) | (freqs > high)] = 0
    return rms(np.fft.irfft(spectrum, len(audio)))


def encode_with_ffmpeg(folder: Path, name: str, source: list[str]) -> bytes:
    """The bytes of `folder/name` as ffmpeg writes it from `source` (its input arguments)."""
    path = folder / name
    subprocess.run(
        [find_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", *source, str(path)],
        check=True,
        timeout=30,
    )
    return path.read_bytes()
