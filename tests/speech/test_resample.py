"""Resampled speech keeps its pitch, its loudness and its length in samples."""

from __future__ import annotations

import numpy as np
import pytest

from poc.speech.resample import resample_int16

from .audio_helpers import band_level, dominant_frequency, rms

RATE_PAIRS = [(22050, 44100), (22050, 48000), (24000, 48000), (24000, 44100), (48000, 22050),
              (44100, 48000), (16000, 48000), (44101, 48000)]  # fmt: skip


def _sine(frequency: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(amplitude * 32767 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
def test_a_sine_keeps_its_frequency_level_and_shape(src: int, dst: int) -> None:
    tone = _sine(1000.0, src, 1.0)
    out = resample_int16(tone, src, dst)
    assert out.dtype == np.int16
    assert len(out) == round(len(tone) * dst / src)
    middle = out[dst // 10 : -dst // 10]  # away from the zero-padded edges
    assert dominant_frequency(middle, dst) == pytest.approx(1000.0, abs=0.5)
    assert rms(middle) == pytest.approx(rms(tone), rel=0.005)
    # Against the ideal sine at the new rate the error is near int16 rounding noise.
    ideal = 0.5 * 32767 * np.sin(2 * np.pi * 1000.0 * np.arange(len(out)) / dst)
    error = (out - ideal)[dst // 10 : -dst // 10]
    assert 20 * np.log10(rms(ideal) / rms(error)) > 70


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 147, 1001])
def test_output_length_is_exactly_rounded(n: int) -> None:
    audio = np.full(n, 1000, dtype=np.int16)
    for src, dst in RATE_PAIRS:
        assert len(resample_int16(audio, src, dst)) == round(n * dst / src)


def test_downsampling_removes_what_the_new_rate_cannot_carry() -> None:
    # 15 kHz cannot exist at 22.05 kHz; without a low-pass it would alias to 7.05 kHz.
    out = resample_int16(_sine(15000.0, 48000, 1.0), 48000, 22050)
    assert band_level(out[2205:-2205], 22050, 100, 11025) < 32767 * 0.5 * 1e-3  # below -60 dB


def test_upsampling_adds_no_images_above_the_old_nyquist() -> None:
    out = resample_int16(_sine(4000.0, 22050, 1.0), 22050, 48000)
    image = band_level(out[4800:-4800], 48000, 12000, 24000)  # the image would be at 18.05 kHz
    assert image < rms(out) * 1e-3


def test_full_scale_overshoot_is_clipped_not_wrapped() -> None:
    # A full-scale step rings past full scale; the ringing must clip, not wrap to the other sign.
    step = np.concatenate([np.full(2000, 32767), np.full(2000, -32767)]).astype(np.int16)
    out = resample_int16(step, 22050, 48000)
    edge = round(2000 * 48000 / 22050)
    assert out.max() == 32767 and out.min() <= -32767  # it did ring past full scale
    assert (out[200 : edge - 10] > 30000).all()
    assert (out[edge + 10 : -200] < -30000).all()


def test_same_rate_is_an_independent_copy() -> None:
    audio = _sine(440.0, 16000, 0.1)
    out = resample_int16(audio, 16000, 16000)
    assert np.array_equal(out, audio) and out is not audio


def test_bad_input_says_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="mono"):
        resample_int16(np.zeros((10, 2), np.int16), 22050, 48000)
    with pytest.raises(ValueError, match="positive"):
        resample_int16(np.zeros(10, np.int16), 0, 48000)
