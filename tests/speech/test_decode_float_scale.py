"""A float file whose samples are integer values is refused, not aired as full-scale noise.

Float audio is at full scale at +-1. A producer that writes int16 sample values into a float WAV
(numpy's int16 array cast to float32, a common slip) sends speech whose samples are in the
hundreds and thousands: clipped to +-1, every sample of it is full scale, a loud square-wave
buzz on air. Against the decoder before this check, such a file played, every sample of its
tone at full scale. Mild overs (a hot master at 3x) are still clipped and played.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile

from poc.speech.decode import InvalidAudio, decode_audio

RATE = 16000


def _float_wav(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples.astype(np.float32), RATE, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def _speech_like() -> np.ndarray:
    """Half a second of a 200 Hz tone at half scale, then half a second of digital silence."""
    t = np.arange(RATE // 2) / RATE
    return np.concatenate([0.5 * np.sin(2 * np.pi * 200 * t), np.zeros(RATE // 2)])


def test_float_samples_at_integer_scale_are_refused_with_a_clear_line() -> None:
    with pytest.raises(InvalidAudio, match=r"beyond ±8 \(full scale is ±1\)") as caught:
        decode_audio(_float_wav(_speech_like() * 32767), "wav", RATE, max_seconds=5)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200


def test_a_few_wild_samples_are_clipped_like_any_over() -> None:
    samples = _speech_like()
    samples[[100, 2000]] = 1e30, -1e30
    audio = decode_audio(_float_wav(samples), "wav", RATE, max_seconds=5)
    assert audio[100] == 32767 and audio[2000] == -32767
    assert abs(int(audio[RATE // 4])) < 32767 // 2 + 2  # the rest as it was


def test_a_hot_master_a_little_over_full_scale_still_plays() -> None:
    audio = decode_audio(_float_wav(_speech_like() * 3), "wav", RATE, max_seconds=5)
    assert audio.max() == 32767 and len(audio) == RATE
