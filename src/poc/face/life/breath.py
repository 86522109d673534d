"""Breath and drift: a slow, seeded motion of head and shoulders inside a region around the person.

The motion is three signals of time (pure functions of (seed, t)): a breathing lift of head and
shoulders (3.5-4.5 s period, a few pixels), a slow sideways/vertical drift of the head and a
slight roll of the head about the neck. They move the pixels through one displacement field
confined to a region of interest (ROI) around the person, falling smoothly to zero at its edges,
so whatever lies outside the ROI (the blurred surround of a fitted photo) never moves.

Cost is what matters here (every frame, 1280x720): the field is evaluated on a coarse grid
(every GRID pixels, a few thousand points) and enlarged to a per-pixel map with one bilinear
resize, then the ROI is remapped once. The grid is laid out so the resize reproduces the
identity exactly where the motion is zero: the ROI's edge pixels are copied, not resampled.
"""

from __future__ import annotations

import math
import random

import attrs
import cv2
import numpy as np

GRID = 8  # pixels between coarse field samples; the field is smooth at this scale
BREATH_PERIOD_S = (3.5, 4.5)
BREATH_LIFT = 0.022  # of the face height at IDLE_MOTION=1 (about 3 px for the default avatar)
DRIFT = 0.012  # of the face height: sideways drift of the head
ROLL_RAD = 0.01  # head roll about the neck (0.6 degrees)


@attrs.frozen
class Motion:
    """Where the head and shoulders are at one instant, in pixels (and radians for roll)."""

    lift: float  # breath: head and shoulders move up by this much
    dx: float  # head drift
    dy: float
    roll: float

    def scaled(self, factor: float) -> Motion:
        return Motion(self.lift * factor, self.dx * factor, self.dy * factor, self.roll * factor)

    @property
    def still(self) -> bool:
        return max(abs(self.lift), abs(self.dx), abs(self.dy), abs(self.roll) * 100) < 1e-3


class MotionSignals:
    """The seeded breathing and drift signals, scaled to a face `face_height` pixels tall."""

    def __init__(self, seed: int, face_height: float, scale: float = 1.0) -> None:
        rng = random.Random(seed * 7919 + 17)
        self.breath_period = rng.uniform(*BREATH_PERIOD_S)
        self._breath_wobble = (rng.uniform(13, 21), rng.uniform(0, 2 * math.pi))
        self._drift = [(rng.uniform(7, 15), rng.uniform(0, 2 * math.pi)) for _ in range(4)]
        self.lift_px = scale * min(6.0, max(1.5, BREATH_LIFT * face_height))
        self.drift_px = scale * min(4.0, max(0.8, DRIFT * face_height))
        self.roll_rad = scale * ROLL_RAD

    def at(self, t: float) -> Motion:
        tau = 2 * math.pi
        period, phase = self._breath_wobble
        # a breath is not a metronome: the phase wanders a little around the mean period
        breath = tau * t / self.breath_period + 0.35 * math.sin(tau * t / period + phase)
        (p1, f1), (p2, f2), (p3, f3), (p4, f4) = self._drift
        return Motion(
            lift=self.lift_px * 0.5 * (1 - math.cos(breath)),
            dx=self.drift_px * (0.65 * math.sin(tau * t / p1 + f1) + 0.35 * math.sin(tau * t / p2 + f2)),
            dy=self.drift_px * 0.4 * math.sin(tau * t / p3 + f3),
            roll=self.roll_rad * math.sin(tau * t / p4 + f4),
        )


def _ramp(x: np.ndarray, start: float, end: float) -> np.ndarray:
    """0 at `start`, 1 at `end` (either order), smooth (zero slope) at both."""
    if end == start:
        return np.ones_like(x)
    s = np.clip((x - start) / (end - start), 0.0, 1.0)
    return s * s * (3 - 2 * s)


class MotionField:
    """The displacement field of a region of interest, and the per-frame remap through it.

    `roi` is (x0, y0, x1, y1) in frame pixels; `head` the head centre, `pivot` the point the
    head rolls about (the neck), `head_radius` the radius moving fully with the head,
    `body_top`/`chest` the rows between which the breathing lift is full."""

    def __init__(self, roi: tuple[int, int, int, int], head: tuple[float, float], pivot: tuple[float, float],
                 head_radius: float, body_top: float, chest: float) -> None:  # fmt: skip
        x0, y0, x1, y1 = roi
        self.roi = roi
        self.width, self.height = x1 - x0, y1 - y0
        # coarse samples sit at pixel (i*GRID + (GRID-1)/2) of a grid padded by GRID on each side,
        # which is where cv2.resize (bilinear, pixel centres) takes them from
        cols = math.ceil(self.width / GRID) + 2
        rows = math.ceil(self.height / GRID) + 2
        self._padded = (cols * GRID, rows * GRID)
        gx = (np.arange(cols) * GRID + (GRID - 1) / 2 - GRID).astype(np.float32)  # ROI coordinates
        gy = (np.arange(rows) * GRID + (GRID - 1) / 2 - GRID).astype(np.float32)
        X, Y = np.meshgrid(gx, gy)
        fx, fy = X + x0, Y + y0  # frame coordinates
        # zero over a GRID-wide band inside the ROI border (so its edge pixels are copied
        # exactly), full inside a margin
        mx, my = max(2.0 * GRID, 0.18 * self.width), max(2.0 * GRID, 0.18 * self.height)
        w1, h1 = self.width - 1 - GRID, self.height - 1 - GRID
        edges = (_ramp(X, GRID, mx) * _ramp(X, w1, self.width - 1 - mx)
                 * _ramp(Y, GRID, my) * _ramp(Y, h1, self.height - 1 - my))  # fmt: skip
        # breath: full from the top of the head to the chest, fading towards the ROI's bottom
        breath = edges * _ramp(fy, y0, body_top) * _ramp(fy, y1 - 1, chest)
        # the head: full within head_radius, fading over the neck and the air around the head
        r = np.hypot(fx - head[0], fy - head[1])
        head_w = edges * _ramp(r, 1.8 * head_radius, head_radius)
        self._base = np.dstack([X, Y]).astype(np.float32)
        self._breath = breath.astype(np.float32)
        self._head = head_w.astype(np.float32)
        self._roll_x = (-(fy - pivot[1]) * head_w).astype(np.float32)
        self._roll_y = ((fx - pivot[0]) * head_w).astype(np.float32)
        self._coarse = np.empty_like(self._base)
        self._full = np.empty((self._padded[1], self._padded[0], 2), np.float32)
        self.map = self._full[GRID : GRID + self.height, GRID : GRID + self.width]  # a view, filled per frame
        self.reach = 0.0  # the largest displacement (px, either axis) in the map last filled

    def update(self, m: Motion) -> np.ndarray:
        """Fill and return the ROI's map (HxWx2 float32, source x,y per pixel, ROI coordinates)
        for motion m. The map samples the source against the motion: content moves by +m."""
        c = self._coarse
        np.multiply(self._head, -m.dx, out=c[..., 0])
        c[..., 0] -= m.roll * self._roll_x
        np.multiply(self._head, -m.dy, out=c[..., 1])
        c[..., 1] += m.lift * self._breath  # content up = sample from below
        c[..., 1] -= m.roll * self._roll_y
        # the per-pixel map is a bilinear mix of these samples, so no pixel moves further than
        # the furthest sample (Life.apply_patched redraws only what a mouth box can reach)
        self.reach = float(np.abs(c).max())
        c += self._base
        cv2.resize(c, self._padded, dst=self._full, interpolation=cv2.INTER_LINEAR)
        return self.map
