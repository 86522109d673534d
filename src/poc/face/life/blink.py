"""Blinks: when they happen (a seeded schedule) and how an eye closes (a vertical remap).

The schedule is a renewal process: blink events start at random intervals of 2.5-5 s and now
and then an event is a double blink. Event n's numbers come from its own generator seeded by
(seed, n), so the closure at time t is a pure function of (seed, t): a re-render of a frame is
identical, and a test can replay a minute of blinks without a stream. Walking to event n costs
O(n) once; a cursor and sparse checkpoints make the next frame O(1) and a jump back cheap.

An eye closes by a vertical remap of a small rectangle around it, built from the six eye
landmarks: the upper lid (lashes and the skin above it, stretched) slides down to meet the lower
lid, which rises a little; the eyeball between them is squeezed to nothing. Nothing is painted.
"""

from __future__ import annotations

import bisect
import random

import attrs
import numpy as np

MIN_INTERVAL_S = 2.5
MAX_INTERVAL_S = 5.0
DOUBLE_CHANCE = 0.12  # share of events that are a double blink
CLOSING_S = 0.075  # lid travelling down
OPENING_S = 0.15  # lid travelling up (slower than closing, as in life)
MIN_CLOSED_S, MAX_CLOSED_S = 0.10, 0.15  # fully closed
DOUBLE_GAP_S = (0.10, 0.22)  # open between the two blinks of a double
FIRST_BLINK_S = (0.8, 2.5)  # a fresh stream blinks soon
_CHECKPOINT_EVERY = 256  # events between remembered (index, start) pairs


@attrs.frozen
class Blink:
    """One closing of the eyes: starts at `start` (seconds), fully closed for `closed` seconds."""

    start: float
    closed: float

    @property
    def end(self) -> float:
        return self.start + CLOSING_S + self.closed + OPENING_S

    def closure(self, t: float) -> float:
        """How closed the eye is at time t: 0 open .. 1 closed (eased ramps, so no lid jerk)."""
        tau = t - self.start
        if tau <= 0 or tau >= CLOSING_S + self.closed + OPENING_S:
            return 0.0
        if tau < CLOSING_S:
            return _ease(tau / CLOSING_S)
        tau -= CLOSING_S
        if tau <= self.closed:
            return 1.0
        return 1.0 - _ease((tau - self.closed) / OPENING_S)


@attrs.frozen
class BlinkEvent:
    """A single blink, or the two of a double blink."""

    start: float
    blinks: tuple[Blink, ...]


def _ease(x: float) -> float:
    return x * x * (3.0 - 2.0 * x)


class BlinkSchedule:
    """The seeded blink events of one stream (times in seconds from frame 0)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._checkpoints: list[tuple[float, int]] = [(self._first_start(), 0)]  # (start, n), sorted
        self._cursor = (self._checkpoints[0][1], self._checkpoints[0][0])  # (n, start of n)
        self._current: tuple[BlinkEvent, float] | None = None  # the cursor's event, and the next start

    def _rng(self, n: int) -> random.Random:
        return random.Random(self.seed * 1_000_003 + n)  # int seeding: the same on every run

    def _first_start(self) -> float:
        return random.Random(self.seed * 1_000_003 - 1).uniform(*FIRST_BLINK_S)

    def _event(self, n: int, start: float) -> tuple[BlinkEvent, float]:
        """Event n starting at `start`, and when event n+1 starts."""
        rng = self._rng(n)
        first = Blink(start, rng.uniform(MIN_CLOSED_S, MAX_CLOSED_S))
        blinks: tuple[Blink, ...] = (first,)
        if rng.random() < DOUBLE_CHANCE:
            blinks += (Blink(first.end + rng.uniform(*DOUBLE_GAP_S), rng.uniform(MIN_CLOSED_S, MAX_CLOSED_S)),)
        return BlinkEvent(start, blinks), start + rng.uniform(MIN_INTERVAL_S, MAX_INTERVAL_S)

    def event_at(self, t: float) -> BlinkEvent | None:
        """The last event starting at or before t (None before the first)."""
        n, start = self._cursor
        if self._current is not None and start <= t < self._current[1]:
            return self._current[0]  # the usual case: the same event as the last frame
        if t < start:  # a jump back: restart from the nearest checkpoint
            i = bisect.bisect_right(self._checkpoints, (t, float("inf"))) - 1
            if i < 0:
                return None
            start, n = self._checkpoints[i]
        while True:
            event, following = self._event(n, start)
            if following > t:
                self._cursor, self._current = (n, start), (event, following)
                return event
            n, start = n + 1, following
            if n % _CHECKPOINT_EVERY == 0 and n // _CHECKPOINT_EVERY >= len(self._checkpoints):
                self._checkpoints.append((start, n))

    def closure(self, t: float) -> float:
        """Eye closure at time t, 0 open .. 1 closed; a pure function of (seed, t)."""
        event = self.event_at(t)
        if event is None:
            return 0.0
        return max(blink.closure(t) for blink in event.blinks)

    def events(self, until: float) -> list[BlinkEvent]:
        """Every event starting before `until` (for tests, docs and benchmarks)."""
        out: list[BlinkEvent] = []
        n, start = 0, self._first_start()
        while start < until:
            event, start = self._event(n, start)
            out.append(event)
            n += 1
        return out


@attrs.frozen
class EyeWarp:
    """The remap that closes one eye: a rectangle of the frame and its maps per closure."""

    x: int
    y: int
    width: int
    height: int
    _upper: np.ndarray = attrs.field(repr=False)  # y of the upper lid per column (rect coordinates)
    _lower: np.ndarray = attrs.field(repr=False)
    _reach: np.ndarray = attrs.field(repr=False)  # 0..1 per column: 1 between the eye corners

    @classmethod
    def from_landmarks(cls, eye: np.ndarray, frame_size: tuple[int, int]) -> EyeWarp | None:
        """From the six landmarks of one eye (iBUG order: corner, two upper, corner, two lower);
        None when the eye is too small or too close to the frame edge to warp."""
        width_px = float(np.linalg.norm(eye[3] - eye[0]))
        if width_px < 6:
            return None
        opening = float(np.mean([eye[5, 1] - eye[1, 1], eye[4, 1] - eye[2, 1]]))
        tall = max(opening, 0.25 * width_px)
        left, right = float(eye[:, 0].min()), float(eye[:, 0].max())
        w, h = frame_size
        x0, x1 = int(np.floor(left - 0.4 * width_px)), int(np.ceil(right + 0.4 * width_px))
        y0 = int(np.floor(eye[1:3, 1].min() - 1.8 * tall))  # the lid skin up to the crease
        y1 = int(np.ceil(eye[4:6, 1].max() + 1.2 * tall))
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            return None
        cols = np.arange(x0, x1, dtype=np.float64)
        upper_x, upper_y = eye[[0, 1, 2, 3], 0], eye[[0, 1, 2, 3], 1]
        lower_x, lower_y = eye[[0, 5, 4, 3], 0], eye[[0, 5, 4, 3], 1]
        order_u, order_l = np.argsort(upper_x), np.argsort(lower_x)
        upper = np.interp(cols, upper_x[order_u], upper_y[order_u]) - y0
        lower = np.interp(cols, lower_x[order_l], lower_y[order_l]) - y0
        lower = np.maximum(lower, upper)
        # full closure between the corners, easing to none over the margin beyond them
        margin = 0.4 * width_px
        edge = np.minimum(cols - (left - margin), (right + margin) - cols) / margin
        reach = np.clip(edge, 0.0, 1.0)
        reach = reach * reach * (3 - 2 * reach)
        return cls(x0, y0, x1 - x0, y1 - y0, upper.astype(np.float32), lower.astype(np.float32),
                   reach.astype(np.float32))  # fmt: skip

    def maps(self, closure: float) -> tuple[np.ndarray, np.ndarray]:
        """(map_x, map_y) float32 in rectangle coordinates for cv2.remap: closure 0 is the
        identity, 1 the lids meeting. Rows outside the lids move less, the edges not at all."""
        rows = np.arange(self.height, dtype=np.float32)[:, None]
        c = (closure * self._reach)[None, :]
        up, low = self._upper[None, :], self._lower[None, :]
        meet = low - 0.25 * (low - up)  # the lower lid rises a quarter of the way
        up_new = up + c * (meet - up)
        low_new = np.maximum(low + c * (meet - low), up_new + 1e-3)
        top, bottom = 0.0, float(self.height - 1)
        above = top + (rows - top) * (up - top) / np.maximum(up_new - top, 1e-3)
        between = up + (rows - up_new) * (low - up) / (low_new - up_new)
        below = low + (rows - low_new) * (bottom - low) / np.maximum(bottom - low_new, 1e-3)
        map_y = np.where(rows < up_new, above, np.where(rows < low_new, between, below))
        map_x = np.broadcast_to(np.arange(self.width, dtype=np.float32)[None, :], map_y.shape)
        return np.ascontiguousarray(map_x), np.ascontiguousarray(map_y, dtype=np.float32)
