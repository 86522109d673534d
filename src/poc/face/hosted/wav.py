"""Speech as the files vendors take: WAV (16-bit PCM, mono) for most, MP3 for Synthesia."""

from __future__ import annotations

import io
import wave

import numpy as np
import soundfile

from poc.speech.resample import resample_int16

# The rates an MP3 (MPEG-1, 2 and 2.5 layer III) can carry; the stream's others are resampled.
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


def encode_wav(audio: np.ndarray, sample_rate: int) -> bytes:
    """int16 mono samples as a WAV file. Raises ValueError for anything else."""
    samples = _speech_samples(audio, sample_rate)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(samples.astype("<i2", copy=False).tobytes())
    return buffer.getvalue()


def encode_mp3(audio: np.ndarray, sample_rate: int) -> bytes:
    """int16 mono samples as an MP3 file (at 48 kHz where MP3 lacks the rate). Raises ValueError
    for anything else, or where this libsndfile cannot write MP3."""
    samples = _speech_samples(audio, sample_rate)
    if sample_rate not in MP3_RATES:
        samples, sample_rate = resample_int16(samples, sample_rate, 48000), 48000
    buffer = io.BytesIO()
    try:
        soundfile.write(buffer, samples, sample_rate, format="MP3")
    except (soundfile.LibsndfileError, TypeError) as exc:  # a libsndfile without MP3
        raise ValueError(f"cannot encode the speech as MP3: {exc}") from None
    return buffer.getvalue()


def _speech_samples(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    samples = np.asarray(audio)
    if samples.dtype != np.int16 or samples.ndim != 1:
        raise ValueError(f"speech must be int16 mono samples, not {samples.dtype} {samples.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, not {sample_rate}")
    return samples
