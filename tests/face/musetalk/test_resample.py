"""Stream-rate audio to Whisper's 16 kHz: accurate, band-limited, and the same however it is fed."""

import numpy as np
import pytest

from poc.face.musetalk.resample import StreamResampler


def tone(freq: float, rate: int, seconds: float) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


@pytest.mark.parametrize("rate", [48000, 44100, 22050, 24000, 8000])
def test_a_tone_keeps_its_shape_at_16k(rate: int) -> None:
    r = StreamResampler(rate, 16000)
    r.push(tone(440, rate, 1.0))
    r.flush()
    out = r.output
    assert out.size == 16000
    expected = 0.5 * np.sin(2 * np.pi * 440 * np.arange(out.size) / 16000)
    inner = slice(400, -400)  # the zero-padded edges ring a little
    assert np.abs(out[inner] - expected[inner]).max() < 1e-3


def test_content_above_8khz_is_removed() -> None:
    r = StreamResampler(48000, 16000)
    r.push(tone(11000, 48000, 0.5))
    r.flush()
    assert np.abs(r.output[400:-400]).max() < 1e-3


@pytest.mark.parametrize("rate", [48000, 22050, 44100])
def test_piecewise_feeding_gives_the_one_shot_result(rate: int) -> None:
    x = np.random.default_rng(1).integers(-20000, 20000, rate, dtype=np.int16)
    whole = StreamResampler(rate, 16000)
    whole.push(x)
    whole.flush()
    pieces = StreamResampler(rate, 16000)
    sizes = np.random.default_rng(2).integers(1, 2500, 200)
    i = 0
    for k in sizes:
        pieces.push(x[i : i + k])
        i += k
    pieces.push(x[i:])
    pieces.flush()
    np.testing.assert_allclose(pieces.output, whole.output, atol=1e-6)


def test_output_is_final_only_once_the_filter_has_its_input() -> None:
    r = StreamResampler(48000, 16000)
    r.push(np.zeros(4800, np.int16))
    ready = r.output.size
    assert 1600 - 48000 * r.latency_seconds / 3 - 1 <= ready < 1600
    r.flush()
    assert r.output.size == 1600


def test_int16_is_scaled_to_unit_full_scale_and_16k_passes_through() -> None:
    r = StreamResampler(16000, 16000)
    r.push(np.array([16384, -32768, 0], np.int16))
    r.flush()
    np.testing.assert_array_equal(r.output, np.array([0.5, -1.0, 0.0], np.float32))


def test_push_after_flush_is_an_error() -> None:
    r = StreamResampler(48000, 16000)
    r.flush()
    with pytest.raises(RuntimeError):
        r.push(np.zeros(10, np.int16))
