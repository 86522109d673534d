"""Sample arithmetic of the media clock.

Frame k covers samples [k*sr//fps, (k+1)*sr//fps). When sr/fps is a whole number (44100/30 =
1470) every frame gets exactly that many; otherwise the counts differ by one so that the total
never drifts from sr * frames / fps. Audio is never stamped by wall time: its position *is*
the frame counter.
"""

from __future__ import annotations

import functools

import numpy as np


def frame_sample_start(frame: int, sample_rate: int, fps: int) -> int:
    return frame * sample_rate // fps


def samples_in_frame(frame: int, sample_rate: int, fps: int) -> int:
    return frame_sample_start(frame + 1, sample_rate, fps) - frame_sample_start(frame, sample_rate, fps)


@functools.lru_cache(maxsize=8)
def silence(samples: int) -> np.ndarray:
    """A shared, read-only block of silence (idle ticks allocate nothing)."""
    block = np.zeros(samples, dtype=np.int16)
    block.setflags(write=False)
    return block


def fade_out(samples: np.ndarray) -> np.ndarray:
    """A linear fade to zero over the block, so cutting speech short never clicks."""
    ramp = np.linspace(1.0, 0.0, len(samples), dtype=np.float32)
    return (samples.astype(np.float32) * ramp).astype(np.int16)


def is_silent(samples: np.ndarray, threshold: int = 64) -> bool:
    return samples.size == 0 or int(np.abs(samples).max()) < threshold
