"""Vendor PCM, as it arrives over the network, turned into stream-rate speech chunks.

Streaming vendors send raw 16-bit PCM in pieces whose borders fall anywhere: between two bytes of
one sample, or in the middle of a resampling window. Two pieces work together here:

- `StreamResampler` resamples chunk by chunk and gives exactly the samples `resample_int16` gives
  for the whole signal (same kernel table, same arithmetic). Output sample j needs the inputs
  `half` samples past its instant, so it is held back until those arrive or `flush()` pads the
  end with zeros as the whole-signal version does. That holdback is at most `half` input samples
  (under a millisecond for speech rates), and there is never a click at a chunk border because
  there is no border in the arithmetic.
- `PcmChunker` carries an odd trailing byte to the next piece, resamples, attaches the mouth
  marks that fall inside each chunk, and coalesces tiny network pieces into chunks of at least
  `MIN_CHUNK_S` of audio (fewer hops downstream). The first audio of an utterance is never held:
  it goes out as soon as it arrives, because the time to first audio is what a viewer notices.
  Later audio is held until `MIN_CHUNK_S` of it has gathered, or until the held audio has waited
  `MAX_HOLD_S` (checked when the next piece arrives: a synchronous reader has no timer).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from fractions import Fraction

import numpy as np

from poc.speech.base import BadVendorAudio, PhonemeMark, SpeechChunk
from poc.speech.resample import _kernel_table

MIN_CHUNK_S = 0.04  # coalesce network pieces to at least this much audio
MAX_HOLD_S = 0.04  # ...but never hold audio longer than this (wall clock) waiting for more


def nearest_rate(rate: int, offered: tuple[int, ...]) -> int:
    """The vendor rate to ask for: `rate` itself if offered, else the closest (the higher one
    on a tie: less is lost)."""
    return min(offered, key=lambda r: (abs(r - rate), -r))


class StreamResampler:
    """Mono int16 from `src_rate` to `dst_rate`, one piece at a time.

    Guarantee: the concatenation of every `feed()` result followed by `flush()` equals
    `resample_int16(whole_input, src_rate, dst_rate)` sample for sample, however the input was
    cut. After `flush()` the resampler starts over for a new signal.
    """

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        if src_rate <= 0 or dst_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {src_rate} -> {dst_rate}")
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        g = math.gcd(src_rate, dst_rate)
        self._up, self._down = dst_rate // g, src_rate // g
        self._passthrough = src_rate == dst_rate
        if not self._passthrough:
            self._table, self._half = _kernel_table(self._up, self._down)
        self._reset()

    def _reset(self) -> None:
        self._received = 0  # input samples fed so far
        self._next = 0  # index of the next output sample
        if not self._passthrough:
            # The zero-padded input as resample_int16 builds it: `half` zeros, then the signal.
            # _buffer[0] is padded index _buffer_start; what no future output needs is dropped.
            self._buffer = np.zeros(self._half, np.float32)
            self._buffer_start = 0

    def feed(self, audio: np.ndarray) -> np.ndarray:
        """The output samples that `audio` (appended to what came before) completes."""
        samples = np.asarray(audio)
        if samples.ndim != 1:
            raise ValueError(f"StreamResampler expects mono audio (1-D), got shape {samples.shape}")
        if self._passthrough:
            self._received += len(samples)
            return samples.astype(np.int16, copy=True)
        self._buffer = np.concatenate([self._buffer, samples.astype(np.float32)])
        self._received += len(samples)
        # Output j is complete once input base_j + half exists (base_j: the input at or before
        # its instant); count how many are.
        ready = self._ready_count()
        return self._produce(ready)

    def flush(self) -> np.ndarray:
        """The rest of the signal (its tail padded with zeros), then start over."""
        if self._passthrough:
            self._reset()
            return np.zeros(0, np.int16)
        total = round(Fraction(self._received * self._up, self._down))
        self._buffer = np.concatenate([self._buffer, np.zeros(self._half + 1, np.float32)])
        out = self._produce(total)
        self._reset()
        return out

    def _base_and_phase(self, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """resample_int16's window position and kernel phase for output indices j."""
        phases = self._table.shape[0]
        base, remainder = np.divmod(j * self._down, self._up)
        phase = (remainder * phases + self._up // 2) // self._up
        wrapped = phase == phases
        base[wrapped] += 1
        phase[wrapped] = 0
        return base, phase

    def _first_input_of(self, j: int) -> int:
        """The first input index output j's window touches (may be negative: padding)."""
        base, _ = self._base_and_phase(np.array([j], dtype=np.int64))
        return int(base[0]) + 1 - self._half

    def _ready_count(self) -> int:
        """One past the last output index whose window is fully received."""
        # Output j needs input index base_j + half < received; base_j <= j * down / up + 1.
        # Start from the estimate and step to the exact boundary (base is monotonic in j).
        estimate = max(self._next, ((self._received - self._half - 1) * self._up) // self._down)
        j = estimate
        while j > self._next and not self._complete(j - 1):
            j -= 1
        while self._complete(j):
            j += 1
        return j

    def _complete(self, j: int) -> bool:
        base, _ = self._base_and_phase(np.array([j], dtype=np.int64))
        return int(base[0]) + self._half < self._received

    def _produce(self, stop: int) -> np.ndarray:
        if stop <= self._next:
            return np.zeros(0, np.int16)
        j = np.arange(self._next, stop, dtype=np.int64)
        base, phase = self._base_and_phase(j)
        taps = self._table.shape[1]
        windows = np.lib.stride_tricks.sliding_window_view(self._buffer, taps)
        # Same arithmetic as resample_int16 (float32 einsum), so the samples are identical.
        out = np.einsum("ij,ij->i", windows[base + 1 - self._buffer_start], self._table[phase])
        self._next = stop
        keep_from = self._first_input_of(self._next) + self._half  # as a padded index
        drop = keep_from - self._buffer_start
        if drop > 0:
            self._buffer = self._buffer[drop:]
            self._buffer_start = keep_from
        return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


class PcmChunker:
    """Raw s16le mono PCM pieces at the vendor's rate in, stream-rate `SpeechChunk`s out.

    Marks are given as absolute positions in stream-rate samples since the utterance began (see
    speech/timings.py); each is attached to the chunk whose audio contains it, as an offset
    within that chunk. A mark whose audio already left (the vendor sent the timing late) is put
    at the start of the next chunk, where it still sounds; of several such late marks only the
    last one is kept, since the earlier ones have ended.
    """

    def __init__(
        self,
        vendor: str,
        src_rate: int,
        dst_rate: int,
        *,
        min_chunk_s: float = MIN_CHUNK_S,
        max_hold_s: float = MAX_HOLD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._vendor = vendor
        self._resampler = StreamResampler(src_rate, dst_rate)
        self._min_samples = max(1, round(min_chunk_s * dst_rate))
        self._max_hold_s = max_hold_s
        self._clock = clock
        self._odd = b""  # a byte of a sample whose other byte has not arrived
        self._held: list[np.ndarray] = []
        self._held_samples = 0
        self._held_since: float | None = None
        self._emitted = 0  # stream-rate samples already given out
        self._marks: list[tuple[int, str]] = []  # absolute positions, in order
        self._sent_any = False

    @property
    def emitted_samples(self) -> int:
        return self._emitted

    def add_marks(self, marks: Iterable[tuple[int, str]]) -> None:
        """Marks at absolute stream-rate sample positions (in order, after earlier ones)."""
        self._marks.extend(marks)

    def feed(self, data: bytes) -> SpeechChunk | None:
        """Take one network piece; return a chunk when one is due, else None."""
        if not data:
            return None
        joined = self._odd + data
        whole = len(joined) - (len(joined) % 2)
        self._odd = joined[whole:]
        samples = np.frombuffer(joined[:whole], dtype="<i2")
        out = self._resampler.feed(samples)
        if len(out):
            if self._held_since is None:
                self._held_since = self._clock()
            self._held.append(out)
            self._held_samples += len(out)
        if not self._held_samples:
            return None
        now = self._clock()
        waited = now - (now if self._held_since is None else self._held_since)
        if not self._sent_any or self._held_samples >= self._min_samples or waited >= self._max_hold_s:
            return self._release()
        return None

    def finish(self) -> SpeechChunk | None:
        """The rest of the audio. BadVendorAudio when the stream ended inside a sample."""
        if self._odd:
            raise BadVendorAudio(
                f"{self._vendor} sent PCM that ends in half a sample (an odd number of bytes)"
            )
        tail = self._resampler.flush()
        if len(tail):
            self._held.append(tail)
            self._held_samples += len(tail)
        if not self._held_samples:
            return None
        return self._release()

    def _release(self) -> SpeechChunk:
        audio = np.concatenate(self._held) if len(self._held) > 1 else self._held[0]
        start, end = self._emitted, self._emitted + len(audio)
        marks: list[PhonemeMark] = []
        late: tuple[int, str] | None = None
        rest: list[tuple[int, str]] = []
        for position, phoneme in self._marks:
            if position < start:
                late = (position, phoneme)
            elif position < end:
                marks.append(PhonemeMark(position - start, phoneme))
            else:
                rest.append((position, phoneme))
        if late is not None and not (marks and marks[0].sample == 0):
            marks.insert(0, PhonemeMark(0, late[1]))
        self._marks = rest
        self._held, self._held_samples, self._held_since = [], 0, None
        self._emitted = end
        self._sent_any = True
        return SpeechChunk(audio=audio.astype(np.int16, copy=False), phonemes=tuple(marks))
