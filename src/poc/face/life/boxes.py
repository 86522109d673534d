"""Axis-aligned pixel boxes (x0, y0, x1, y1; x1/y1 exclusive) for drawing a talking frame's
mouth box through life's motion (face/life `Life.apply_patched`): which output pixels a pasted
mouth can reach through the displacement field, and which source pixels they sample."""

from __future__ import annotations

Box = tuple[int, int, int, int]


def overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def clip(a: Box, to: Box) -> Box | None:
    """The part of `a` inside `to`; None when they do not overlap."""
    box = (max(a[0], to[0]), max(a[1], to[1]), min(a[2], to[2]), min(a[3], to[3]))
    return box if box[0] < box[2] and box[1] < box[3] else None


def grow(a: Box, by: int, within: Box) -> Box:
    """`a` widened by `by` pixels on every side, kept inside `within` (which contains `a`)."""
    return max(a[0] - by, within[0]), max(a[1] - by, within[1]), min(a[2] + by, within[2]), min(a[3] + by, within[3])


def union(a: Box, b: Box) -> Box:
    """The smallest box holding both."""
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])
