"""Streaming conversion of the stream's audio to Whisper's 16 kHz.

Audio arrives in per-frame pieces at the stream rate (48 kHz, 22.05 kHz, ...). A rational
polyphase resampler with a Hann-windowed sinc low-pass turns it into 16 kHz as it comes, so each
input sample is filtered once and a piecewise feed gives exactly the samples a one-shot
conversion would. With rates reduced to up/down, output block q (samples q*up .. q*up+up-1)
depends only on input samples around q*down, which is why a block can be emitted as soon as its
right-hand taps have arrived; `flush` pads the end with zeros.

The filter bank holds up x (down + taps) values, so a rate with no small ratio to 16 kHz
(44101 Hz: 16000/44101, a bank of 16000 x 44195 values, gigabytes) would exhaust memory at
start-up. Such a rate converts at the nearest ratio with at most MAX_PHASES phases instead
(`conversion_ratio`): every usual rate (8, 11.025, 22.05, 24, 44.1, 48, 96 kHz...) stays exact,
and an odd one runs off by under 0.05 % (the lips drift from the speech by 30 ms a minute at
worst, under 6 ms a minute for 99 % of the rates from 8 to 96 kHz).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

ZERO_CROSSINGS = 16  # filter half-width, in zero crossings of the low-pass sinc
ROLLOFF = 0.94  # cut-off as a fraction of the lower Nyquist rate
MAX_PHASES = 1000  # up and down at most: a bank of at most ~1000 x 1200 float32 (under 5 MB)


def conversion_ratio(rate_in: int, rate_out: int) -> Fraction:
    """up/down, the output samples made per input sample: rate_out/rate_in exactly when both
    terms fit MAX_PHASES, else the nearest fraction whose terms do (see the module docstring)."""
    exact = Fraction(rate_out, rate_in)
    if exact <= 1:  # downsampling: down is the larger term
        return exact.limit_denominator(MAX_PHASES)
    return 1 / (1 / exact).limit_denominator(MAX_PHASES)


def _phase_filters(up: int, down: int) -> tuple[np.ndarray, int]:
    """Taps for each output phase: (K, up) float32, and the half-width W in input samples.

    Output sample q*up + p sits at input position q*down + p*down/up; its taps cover input
    samples q*down - W .. q*down + down + W - 1 (K = down + 2W of them).
    """
    cutoff = 0.5 * ROLLOFF * min(1.0, up / down)  # cycles per input sample
    half = math.ceil(ZERO_CROSSINGS / (2 * cutoff))
    taps = np.arange(-half, down + half, dtype=np.float64)  # offsets from q*down
    phases = np.arange(up, dtype=np.float64) * down / up
    x = phases[None, :] - taps[:, None]  # distance from each tap to each output position
    h = 2 * cutoff * np.sinc(2 * cutoff * x)
    h *= np.where(np.abs(x) < half, 0.5 * (1 + np.cos(np.pi * x / half)), 0.0)
    h /= h.sum(axis=0, keepdims=True)  # unity gain at DC for every phase
    return h.astype(np.float32), half


class StreamResampler:
    """Converts a growing mono stream from rate_in to rate_out; `output` holds what is final."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        if rate_in <= 0 or rate_out <= 0:
            raise ValueError(f"sample rates must be positive, got {rate_in} -> {rate_out}")
        self.rate_in, self.rate_out = rate_in, rate_out
        ratio = conversion_ratio(rate_in, rate_out)
        self.up, self.down = ratio.numerator, ratio.denominator
        self._identity = self.up == self.down
        if not self._identity:
            self._filters, self._half = _phase_filters(self.up, self.down)
        else:
            self._half = 0
        self._pending = np.zeros(self._half, np.float32)  # left zero history, then unconsumed input
        self._out = np.zeros(1 << 14, np.float32)  # grows by doubling: appends stay O(1) amortised
        self._n_out = 0
        self._n_in = 0
        self._flushed = False

    @property
    def latency_seconds(self) -> float:
        """How far the input must run past an output sample before that sample is final."""
        return 0.0 if self._identity else (self.down + self._half) / self.rate_in

    @property
    def output(self) -> np.ndarray:
        """All final output samples so far (float32; a view, valid until the next push)."""
        return self._out[: self._n_out]

    def _append(self, y: np.ndarray) -> None:
        need = self._n_out + y.size
        if need > self._out.size:
            grown = np.zeros(max(need, 2 * self._out.size), np.float32)
            grown[: self._n_out] = self._out[: self._n_out]
            self._out = grown
        self._out[self._n_out : need] = y
        self._n_out = need

    @property
    def samples_in(self) -> int:
        return self._n_in

    def push(self, samples: np.ndarray) -> None:
        """Append input samples (int16 full scale 32768, or float in [-1, 1])."""
        if self._flushed:
            raise RuntimeError("push after flush")
        x = np.asarray(samples)
        x = x.astype(np.float32) / 32768.0 if x.dtype == np.int16 else x.astype(np.float32)
        self._n_in += x.size
        if self._identity:
            self._append(x)
            return
        self._pending = np.concatenate([self._pending, x])
        self._emit()

    def flush(self) -> None:
        """Treat the input as ended: emit the tail, padded with zeros, to ceil(n*up/down)."""
        if self._flushed:
            return
        self._flushed = True
        if self._identity:
            return
        total = -(-self._n_in * self.up // self.down)
        produced = self.output.size
        if total > produced:
            k = self.down + 2 * self._half
            self._pending = np.concatenate([self._pending, np.zeros(k, np.float32)])
            self._emit()
            self._n_out = min(self._n_out, total)

    def _emit(self) -> None:
        k = self.down + 2 * self._half
        blocks = (self._pending.size - k) // self.down + 1
        if blocks <= 0:
            return
        span = self._pending[: (blocks - 1) * self.down + k]
        windows = np.lib.stride_tricks.sliding_window_view(span, k)[:: self.down]
        self._append((windows @ self._filters).reshape(-1))
        self._pending = self._pending[blocks * self.down :]
