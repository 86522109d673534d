"""Speech resampled and chunked as it arrives sounds exactly as if it had arrived whole."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from support.lanes import examples

from poc.speech.base import BadVendorAudio, PhonemeMark
from poc.speech.resample import resample_int16
from poc.speech.sentences import join_chunks
from poc.speech.stream_resample import PcmChunker, StreamResampler, nearest_rate

RATE_PAIRS = [(24000, 44100), (22050, 48000), (44100, 16000), (48000, 44100), (44100, 44100),
              (8000, 44100), (44101, 48000), (32000, 30000)]  # fmt: skip


def _cut(data: np.ndarray | bytes, cuts: list[int]) -> list:
    edges = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


@settings(max_examples=examples(150), deadline=None)
@given(
    pair=st.sampled_from(RATE_PAIRS),
    samples=st.lists(st.integers(-32768, 32767), max_size=3000),
    cuts=st.lists(st.integers(0, 10_000), max_size=25),
)
def test_any_chunking_gives_the_samples_of_the_whole_signal(
    pair: tuple[int, int], samples: list[int], cuts: list[int]
) -> None:
    src, dst = pair
    signal = np.array(samples, dtype=np.int16)
    resampler = StreamResampler(src, dst)
    pieces = [resampler.feed(piece) for piece in _cut(signal, cuts)]
    streamed = np.concatenate([*pieces, resampler.flush()])
    assert streamed.dtype == np.int16
    np.testing.assert_array_equal(streamed, resample_int16(signal, src, dst))


def test_a_long_speech_like_signal_in_network_sized_pieces_matches_exactly() -> None:
    rng = np.random.default_rng(7)
    t = np.arange(24000 * 3) / 24000
    signal = np.rint(12000 * np.sin(2 * np.pi * 140 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)))
    signal = (signal + rng.normal(0, 300, len(t))).astype(np.int16)
    resampler = StreamResampler(24000, 44100)
    sizes = rng.integers(1, 3000, 200)
    pieces, start = [], 0
    for size in sizes:
        pieces.append(resampler.feed(signal[start : start + size]))
        start += size
    pieces.append(resampler.feed(signal[start:]))
    pieces.append(resampler.flush())
    np.testing.assert_array_equal(np.concatenate(pieces), resample_int16(signal, 24000, 44100))


def test_outputs_are_held_back_only_until_their_window_is_complete() -> None:
    resampler = StreamResampler(24000, 48000)
    first = resampler.feed(np.full(2400, 1000, dtype=np.int16))  # 100 ms
    # All but the last ~16 zero crossings (under a millisecond) come out at once.
    assert 4800 - 100 < len(first) < 4800
    rest = resampler.flush()
    assert len(first) + len(rest) == 4800


def test_after_flush_a_new_signal_starts_clean() -> None:
    resampler = StreamResampler(22050, 44100)
    tone = (8000 * np.sin(np.arange(2205) / 5)).astype(np.int16)
    resampler.feed(tone)
    resampler.flush()
    again = np.concatenate([resampler.feed(tone), resampler.flush()])
    np.testing.assert_array_equal(again, resample_int16(tone, 22050, 44100))


@settings(max_examples=examples(60), deadline=None)
@given(cuts=st.lists(st.integers(0, 100_000), max_size=30))
def test_pcm_bytes_cut_inside_samples_are_put_back_together(cuts: list[int]) -> None:
    signal = (np.arange(-4000, 4000, 3) * 7).astype(np.int16)
    data = signal.astype("<i2").tobytes()
    chunker = PcmChunker("Vendor", 24000, 24000, min_chunk_s=0.0)
    chunks = [c for piece in _cut(data, cuts) if (c := chunker.feed(piece)) is not None]
    last = chunker.finish()
    joined = join_chunks([*chunks, *([last] if last else [])])
    np.testing.assert_array_equal(joined.audio, signal)


def test_a_stream_that_ends_inside_a_sample_is_bad_vendor_audio() -> None:
    chunker = PcmChunker("Acme", 24000, 44100)
    chunker.feed(b"\x01\x02\x03")
    with pytest.raises(BadVendorAudio, match="Acme sent PCM that ends in half a sample"):
        chunker.finish()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _pcm(ms: float, rate: int = 48000) -> bytes:
    return np.full(round(rate * ms / 1000), 500, dtype="<i2").tobytes()


def test_the_first_audio_goes_at_once_then_tiny_pieces_are_gathered_to_40_ms() -> None:
    clock = FakeClock()
    chunker = PcmChunker("Vendor", 48000, 48000, clock=clock)
    first = chunker.feed(_pcm(5))
    assert first is not None and len(first.audio) == 240  # not held for company
    released = [c for _ in range(40) if (c := chunker.feed(_pcm(5))) is not None]
    assert released and all(len(c.audio) >= 0.04 * 48000 for c in released)
    tail = chunker.finish()
    total = len(first.audio) + sum(len(c.audio) for c in released) + (len(tail.audio) if tail else 0)
    assert total == 41 * 240


def test_held_audio_is_released_once_it_has_waited_40_ms() -> None:
    clock = FakeClock()
    chunker = PcmChunker("Vendor", 48000, 48000, clock=clock)
    chunker.feed(_pcm(5))
    assert chunker.feed(_pcm(5)) is None  # 5 ms held, waiting for more
    clock.now += 0.041  # the vendor slowed down: do not sit on audio any longer
    late = chunker.feed(_pcm(5))
    assert late is not None and len(late.audio) == 480


def test_marks_land_in_the_chunk_that_holds_their_audio() -> None:
    chunker = PcmChunker("Vendor", 48000, 48000, min_chunk_s=0.0)
    chunker.add_marks([(100, "m"), (3000, "a"), (5000, "p")])
    first = chunker.feed(_pcm(50))  # samples 0..2399
    second = chunker.feed(_pcm(50))  # samples 2400..4799
    chunker.add_marks([(4000, "i")])  # sent late: its audio already went
    third = chunker.feed(_pcm(50))  # samples 4800..7199
    assert first.phonemes == (PhonemeMark(100, "m"),)
    assert second.phonemes == (PhonemeMark(600, "a"),)
    # The late mark still sounds at the start of the next chunk; the on-time one keeps its place.
    assert third.phonemes == (PhonemeMark(0, "i"), PhonemeMark(200, "p"))


def test_the_nearest_offered_rate_is_asked_for() -> None:
    offered = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
    assert nearest_rate(44100, offered) == 44100
    assert nearest_rate(48000, offered) == 48000
    assert nearest_rate(30000, offered) == 32000
    assert nearest_rate(96000, offered) == 48000
