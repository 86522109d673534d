"""What a viewer sees of the living idle, measured on grey frames read back from the stream:
blinks (the irises' dark pixels covered by the lids) and stretches where nothing moves."""

from __future__ import annotations

import numpy as np


def blinks(eyes: np.ndarray) -> list[int]:
    """Frames where a blink starts: the dark pixels of irises and pupils drop under 70 % of
    their usual (running median) count, as the lids cover them."""
    dark = (eyes < 70).reshape(len(eyes), -1).sum(axis=1).astype(float)
    usual = np.array([np.median(dark[max(0, i - 45) : i + 45]) for i in range(len(dark))])
    shut = dark < 0.7 * usual
    return [i for i in range(1, len(shut)) if shut[i] and not shut[i - 1]]


def longest_still(head: np.ndarray, threshold: float = 0.6) -> int:
    """The longest run of frames that all look like its first one (mean change under
    `threshold` grey levels), in frames."""
    longest, start = 0, 0
    base = head[0].astype(np.int16)
    for i in range(1, len(head)):
        if np.abs(head[i].astype(np.int16) - base).mean() >= threshold:
            longest, start, base = max(longest, i - start), i, head[i].astype(np.int16)
    return max(longest, len(head) - start)
