"""Speech as the WAV file every vendor accepts (16-bit PCM, mono)."""

from __future__ import annotations

import io
import wave

import numpy as np


def encode_wav(audio: np.ndarray, sample_rate: int) -> bytes:
    """int16 mono samples as a WAV file. Raises ValueError for anything else."""
    samples = np.asarray(audio)
    if samples.dtype != np.int16 or samples.ndim != 1:
        raise ValueError(f"speech must be int16 mono samples, not {samples.dtype} {samples.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, not {sample_rate}")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(samples.astype("<i2", copy=False).tobytes())
    return buffer.getvalue()
