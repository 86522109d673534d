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

Memory is bounded for any rate pair: the kernel is `2 * ZEROS * src / dst` taps wide when
downsampling, so the ratio is capped (`MAX_DOWNSAMPLING`, a table of at most 9 MB); only small
tables are kept in the cache (every realistic pair's is, and a stream of odd rates cannot pin
more than 16 x `_CACHED_TABLE_BYTES`); and each block of outputs is sized by its taps.
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
# The kernel widens with src/dst; 64x (e.g. 512 kHz -> 8 kHz) is far past any real audio and
# keeps a table under 1024 x 2228 float32 (9 MB).
MAX_DOWNSAMPLING = 64
_BLOCK = 16384  # outputs per block (fewer when the kernel is wide)...
_BLOCK_VALUES = _BLOCK * 128  # ...so each temporary (block x taps) matrix stays under 8 MB
_CACHED_TABLE_BYTES = 1 << 20  # larger tables (only rates far apart and coprime) are not kept
_TABLE_VALUES = 1 << 16  # kernel values computed at once (float64 temporaries)


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
    padded = np.zeros(half + len(audio) + half + 1, np.float32)
    padded[half : half + len(audio)] = audio  # in place: no second float copy of a long input
    windows = np.lib.stride_tricks.sliding_window_view(padded, table.shape[1])
    out = np.empty(n_out, dtype=np.float32)
    block = max(1, min(_BLOCK, _BLOCK_VALUES // table.shape[1]))
    for first in range(0, n_out, block):
        j = np.arange(first, min(first + block, n_out), dtype=np.int64)
        base, remainder = np.divmod(j * down, up)
        phase = (remainder * phases + up // 2) // up  # == remainder when up <= MAX_PHASES
        wrapped = phase == phases
        base[wrapped] += 1
        phase[wrapped] = 0
        # Window starting at padded[base + 1] holds input samples base - half + 1 .. base + half.
        out[first : first + len(j)] = np.einsum("ij,ij->i", windows[base + 1], table[phase])
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


def _kernel_table(up: int, down: int) -> tuple[np.ndarray, int]:
    """(phases x taps) kernel weights and the half width in input samples, for ratio up/down.

    Raises ValueError when down/up is past MAX_DOWNSAMPLING (the table would be unbounded).
    """
    if down > MAX_DOWNSAMPLING * up:
        raise ValueError(
            f"cannot downsample by {down / up:.0f}x (at most {MAX_DOWNSAMPLING}x is supported)"
        )
    half = _half_width(up, down)
    if min(up, MAX_PHASES) * 2 * half * 4 > _CACHED_TABLE_BYTES:
        return _build_kernel_table(up, down)
    return _cached_kernel_table(up, down)


def _cutoff(up: int, down: int) -> float:
    return min(1.0, up / down) * ROLLOFF  # in units of the input Nyquist rate


def _half_width(up: int, down: int) -> int:
    return math.ceil(ZEROS / _cutoff(up, down))


@lru_cache(maxsize=16)
def _cached_kernel_table(up: int, down: int) -> tuple[np.ndarray, int]:
    return _build_kernel_table(up, down)


def _build_kernel_table(up: int, down: int) -> tuple[np.ndarray, int]:
    cutoff, half = _cutoff(up, down), _half_width(up, down)
    phases = min(up, MAX_PHASES)
    taps = np.arange(-half + 1, half + 1, dtype=np.float64)[None, :]
    table = np.empty((phases, 2 * half), dtype=np.float32)
    # A few phases at a time: the float64 temporaries of a wide kernel would be ~20x the table.
    rows = max(1, _TABLE_VALUES // (2 * half))
    for first in range(0, phases, rows):
        frac = np.arange(first, min(first + rows, phases), dtype=np.float64)[:, None] / phases
        table[first : first + len(frac)] = _kernel_rows(frac - taps, cutoff, half)
    return table, half


def _kernel_rows(offset: np.ndarray, cutoff: float, half: int) -> np.ndarray:
    """Normalised kernel weights; `offset`: distance from the output instant to each input."""
    inside = np.clip(1.0 - (offset / half) ** 2, 0.0, None)
    window = np.i0(KAISER_BETA * np.sqrt(inside)) / np.i0(KAISER_BETA)
    window[inside == 0.0] = 0.0
    weights = cutoff * np.sinc(cutoff * offset) * window
    weights /= weights.sum(axis=1, keepdims=True)
    return weights
