"""Sample-rate conversion for mono int16 speech, numpy only.

Each output sample j sits at input time t = j * src / dst. It is the windowed-sinc interpolation
of the input around t: a low-pass at the lower of the two Nyquist rates (times `ROLLOFF`, so the
transition band ends before aliases start), Kaiser-windowed to `ZEROS` zero crossings per side.
The fractional part of t only takes `up` distinct values (dst / gcd), so the kernel is tabulated
once per phase (the polyphase form) and each output is one dot product. Rates whose ratio has a
huge numerator (coprime rates) have their phase rounded to one of `MAX_PHASES`: a timing error
under 1/2048 of an input sample, inaudible. Each phase is normalised to unit DC gain, so levels
are kept exactly for low frequencies. The output length is exactly round(n * dst / src), which
lets callers count samples without drift.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import numpy as np

ROLLOFF = 0.92  # pass band edge as a fraction of the lower Nyquist rate
ZEROS = 16  # sinc zero crossings on each side of the kernel
KAISER_BETA = 8.0  # about 80 dB of stop-band attenuation
MAX_PHASES = 1024
_BLOCK = 16384  # outputs per block: bounds the temporary (block x taps) matrices


def resample_int16(audio: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """`audio` (mono int16 at `src_rate`) at `dst_rate`: int16, round(n * dst / src) samples."""
    if audio.ndim != 1:
        raise ValueError(f"resample_int16 expects mono audio (1-D), got shape {audio.shape}")
    if src_rate <= 0 or dst_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {src_rate} -> {dst_rate}")
    if src_rate == dst_rate:
        return audio.astype(np.int16, copy=True)
    g = math.gcd(src_rate, dst_rate)
    up, down = dst_rate // g, src_rate // g
    n_out = round(Fraction(len(audio) * up, down))
    if n_out == 0 or len(audio) == 0:
        return np.zeros(n_out, dtype=np.int16)

    table, half = _kernel_table(up, down)
    phases = table.shape[0]
    # Zero padding: `half` before the signal so tap 0 of output 0 exists, `half + 1` after.
    padded = np.concatenate(
        [np.zeros(half, np.float32), audio.astype(np.float32), np.zeros(half + 1, np.float32)]
    )
    windows = np.lib.stride_tricks.sliding_window_view(padded, table.shape[1])
    out = np.empty(n_out, dtype=np.float32)
    for first in range(0, n_out, _BLOCK):
        j = np.arange(first, min(first + _BLOCK, n_out), dtype=np.int64)
        base, remainder = np.divmod(j * down, up)
        phase = (remainder * phases + up // 2) // up  # == remainder when up <= MAX_PHASES
        wrapped = phase == phases
        base[wrapped] += 1
        phase[wrapped] = 0
        # Window starting at padded[base + 1] holds input samples base - half + 1 .. base + half.
        out[first : first + len(j)] = np.einsum("ij,ij->i", windows[base + 1], table[phase])
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


@lru_cache(maxsize=16)
def _kernel_table(up: int, down: int) -> tuple[np.ndarray, int]:
    """(phases x taps) kernel weights and the half width in input samples, for ratio up/down."""
    cutoff = min(1.0, up / down) * ROLLOFF  # in units of the input Nyquist rate
    half = math.ceil(ZEROS / cutoff)
    phases = min(up, MAX_PHASES)
    frac = np.arange(phases, dtype=np.float64)[:, None] / phases
    taps = np.arange(-half + 1, half + 1, dtype=np.float64)[None, :]
    offset = frac - taps  # distance from the output instant to each input sample
    inside = np.clip(1.0 - (offset / half) ** 2, 0.0, None)
    window = np.i0(KAISER_BETA * np.sqrt(inside)) / np.i0(KAISER_BETA)
    window[inside == 0.0] = 0.0
    weights = cutoff * np.sinc(cutoff * offset) * window
    weights /= weights.sum(axis=1, keepdims=True)
    return weights.astype(np.float32), half
