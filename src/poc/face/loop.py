"""The idle loop of a video avatar: forward-only segments joined where two frames look alike.

Playing a clip forward then backward (ping-pong) never jumps, but every head drift visibly
reverses at the clip's ends. Instead we look for a pair of moments in the clip that look alike
(pixels of a small grey thumbnail, then the face landmarks) and play forward from one to the
other, over and over. At each joint the last `fade` frames of the ending segment are cross-faded
with the `fade` frames that lead into the next segment's first frame, so both streams keep moving
forward while the picture slides from one to the other (200-400 ms, `fade_frames`).

Search. Every candidate (segment start i, segment end j) is first ranked cheaply by the mean
thumbnail distance along its fade window (cumulative sums along the diagonals of the distance
matrix: one best start per loop length). The shortlist is then checked exactly: the thumbnails of
the cross-faded frames are built and the largest frame-to-frame change across the joint must not
exceed the 99th percentile of the clip's own frame-to-frame change. Last, for the most alike
few, the face landmarks of the two frames blended half and half must agree within
`LANDMARK_TOLERANCE` of the face width, so the cross-fade never shows a ghost of a second face.
Of the joints that pass all three, the longest loop wins (it repeats least). A clip with no such
joint falls back to ping-pong, and says so in the log once.

Engines draw the mouth on body frames by source frame number (`Cycle.numbers`). A cross-faded
frame is a blend of two source frames: its number is the NEARER one (the one with the larger
weight; the incoming frame at exactly half), whose landmarks are within the tolerance above of
the blend's, and the engines paint on the blended picture itself (`Cycle.pictures`), so the
patch border matches the body the viewer sees.

Cost: the plan for 600 frames at 1280x720 takes about a second (thumbnails dominate, plus a few
landmark detections) and is cached as a small JSON file keyed by the source's digest, the output
size and the frame rate; the blended pictures (fade frames per joint) are rebuilt at load.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Sequence

import attrs
import cv2
import numpy as np

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the cached plan's meaning changes
FADE_SECONDS = 0.3  # cross-fade at each joint; always kept within FADE_RANGE
FADE_RANGE = (0.2, 0.4)
THUMB_SIZE = (64, 36)  # (w, h) of the grey thumbnails the pixel distances are measured on
MIN_SEGMENT_SECONDS = 1.0  # a shorter loop repeats too visibly to be worth it
LANDMARK_TOLERANCE = 0.02  # mean landmark distance at a joint, as a fraction of the face width
# (2.6 px for a 130-px face at 720p: dlib's own jitter is about a pixel)
LANDMARK_CHECKS = 8  # candidates checked for landmarks before giving up (each ~50-250 ms)


@attrs.frozen
class Joint:
    """After source frame `after` comes `to`; `change` is the largest frame-to-frame change
    across the cross-fade divided by the clip's 99th percentile (<= 1 by construction)."""

    after: int
    to: int
    change: float


@attrs.frozen
class LoopPlan:
    """Forward-only source ranges [start, stop), played in order and again; the last `fade`
    frames of each are cross-faded into the next. `segments` is empty for ping-pong."""

    segments: tuple[tuple[int, int], ...]
    fade: int
    joints: tuple[Joint, ...] = ()
    reason: str = ""  # why ping-pong, when it is

    @property
    def ping_pong(self) -> bool:
        return not self.segments


@attrs.frozen
class Cycle:
    """One pass of the loop: per position, the source frame the engines draw on (`numbers`)
    and the picture shown (`pictures`: a source frame itself, or a read-only cross-fade)."""

    numbers: tuple[int, ...]
    pictures: tuple[np.ndarray, ...] = attrs.field(eq=False, repr=False)
    plan: LoopPlan | None = None  # None: a still or a clip too short to search

    def __len__(self) -> int:
        return len(self.numbers)


def fade_frames(fps: int) -> int:
    """Frames of cross-fade at `fps`: FADE_SECONDS, kept inside FADE_RANGE, at least 1."""
    lo, hi = math.ceil(FADE_RANGE[0] * fps), math.floor(FADE_RANGE[1] * fps)
    return max(1, min(max(round(FADE_SECONDS * fps), lo), hi))


def min_segment(fps: int) -> int:
    """The shortest forward segment worth a loop: a second, and room for its fade and more."""
    return max(round(MIN_SEGMENT_SECONDS * fps), 3 * fade_frames(fps))


def ping_pong_cycle(frames: Sequence[np.ndarray]) -> Cycle:
    """0, 1, .., N-1, N-2, .., 1 (one frame: just 0): never jumps, but reverses at both ends."""
    n = len(frames)
    numbers = (0,) if n == 1 else tuple(range(n)) + tuple(range(n - 2, 0, -1))
    return Cycle(numbers=numbers, pictures=tuple(frames[k] for k in numbers))


def build_cycle(frames: Sequence[np.ndarray], plan: LoopPlan) -> Cycle:
    """The cycle that `plan` describes over `frames` (ping-pong when it has no segments)."""
    if plan.ping_pong:
        cycle = ping_pong_cycle(frames)
        return Cycle(numbers=cycle.numbers, pictures=cycle.pictures, plan=plan)
    numbers: list[int] = []
    pictures: list[np.ndarray] = []
    fade, count = plan.fade, len(plan.segments)
    for k, (start, stop) in enumerate(plan.segments):
        incoming = plan.segments[(k + 1) % count][0]
        for src in range(start, stop - fade):
            numbers.append(src)
            pictures.append(frames[src])
        for t in range(fade):
            a, b = stop - fade + t, incoming - fade + t
            w = (t + 1) / (fade + 1)  # weight of the incoming frame: 0 < w < 1, rising
            blend = cv2.addWeighted(frames[a], 1.0 - w, frames[b], w, 0.0)
            blend.setflags(write=False)
            numbers.append(b if w >= 0.5 else a)
            pictures.append(blend)
    return Cycle(numbers=tuple(numbers), pictures=tuple(pictures), plan=plan)


def thumbnails(frames: Sequence[np.ndarray]) -> np.ndarray:
    """(N, h*w) float32 grey thumbnails, 0..255."""
    tw, th = THUMB_SIZE
    out = np.empty((len(frames), tw * th), np.float32)
    for k, frame in enumerate(frames):
        h, w = frame.shape[:2]
        # Point-sample to 5x the thumbnail first, then average 5x5 blocks: 7x cheaper than one
        # area resize of a 720p frame, and 25 samples per thumbnail pixel are plenty to compare.
        if w > 5 * tw and h > 5 * th:
            frame = cv2.resize(frame, (5 * tw, 5 * th), interpolation=cv2.INTER_NEAREST)
        small = cv2.resize(frame, THUMB_SIZE, interpolation=cv2.INTER_AREA)
        out[k] = (cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small).reshape(-1)
    return out


def distances(thumbs: np.ndarray) -> np.ndarray:
    """(N, N) RMS pixel difference between every two thumbnails."""
    x = thumbs.astype(np.float64)
    sq = (x * x).sum(axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    return np.sqrt(np.maximum(d2, 0.0) / x.shape[1])


def _rms_steps(seq: np.ndarray) -> np.ndarray:
    diff = np.diff(seq, axis=0)
    return np.sqrt((diff * diff).mean(axis=1))


def joint_change(thumbs: np.ndarray, after: int, to: int, fade: int) -> float:
    """Largest RMS change between consecutive shown thumbnails from the frame before the
    fade, through the cross-fade from `after` into `to`, to frame `to` itself."""
    a = thumbs[after - fade : after + 1]  # the frame before the fade, then the fading-out ones
    b = thumbs[to - fade : to + 1]  # the fading-in ones, then the next segment's first frame
    w = (np.arange(1, fade + 1, dtype=np.float32) / (fade + 1))[:, None]
    seq = np.concatenate([a[:1], (1.0 - w) * a[1:] + w * b[:-1], b[-1:]])
    return float(_rms_steps(seq).max())


def _shortlist(dist: np.ndarray, fade: int, shortest: int) -> list[tuple[float, int, int]]:
    """(window cost, start i, end j) per loop length j - i: the start whose fade window
    (frames j-fade..j-1 against i-fade..i-1) differs least, i >= fade, j <= N."""
    n = len(dist)
    out = []
    for length in range(shortest, n - fade + 1):
        diag = np.diagonal(dist, offset=-length)  # diag[k] = dist[k + length, k]
        sums = np.concatenate([[0.0], np.cumsum(diag)])
        starts = np.arange(fade, n - length + 1)  # i; the window is diag[i - fade : i]
        cost = (sums[starts] - sums[starts - fade]) / fade
        best = int(np.argmin(cost))
        out.append((float(cost[best]), int(starts[best]), int(starts[best]) + length))
    return out


class _Landmarks:
    """Landmarks of the few frames a search asks about, searched near the first face found."""

    def __init__(self, frames: Sequence[np.ndarray]) -> None:
        self.frames = frames
        self.found: dict[int, np.ndarray | None] = {}
        self.box: tuple[int, int, int, int] | None = None
        self.usable = True  # False once the first frame asked shows no face

    def __call__(self, k: int) -> np.ndarray | None:
        if k not in self.found:
            self.found[k] = self._detect(self.frames[k])
        return self.found[k]

    def _detect(self, frame: np.ndarray) -> np.ndarray | None:
        from poc.face.landmarks import NoFaceFound, detect_landmarks

        if self.box is not None:
            x0, y0, x1, y1 = self.box
            try:
                return detect_landmarks(frame[y0:y1, x0:x1], upsample=0) + np.array([x0, y0], np.float32)
            except NoFaceFound:
                pass
        try:
            found = detect_landmarks(frame)
        except NoFaceFound:
            return None
        (fx0, fy0), (fx1, fy1) = found.min(axis=0), found.max(axis=0)
        mx, my = (fx1 - fx0) * 0.8 + 8, (fy1 - fy0) * 0.8 + 8  # room for the head to move
        h, w = frame.shape[:2]
        self.box = (int(max(0, fx0 - mx)), int(max(0, fy0 - my)), int(min(w, fx1 + mx)), int(min(h, fy1 + my)))
        return found


def landmark_offset(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance between two sets of 68 landmarks, as a fraction of the face width
    (jaw end to jaw end)."""
    width = max(float(np.linalg.norm(a[16] - a[0])), 1.0)
    return float(np.linalg.norm(a - b, axis=1).mean()) / width


def find_loop(frames: Sequence[np.ndarray], fps: int) -> LoopPlan:
    """The loop plan for a clip (see the module docstring); ping-pong when no joint passes."""
    fade, n = fade_frames(fps), len(frames)
    shortest = min_segment(fps)
    if n < shortest + fade:
        return LoopPlan(segments=(), fade=fade, reason=f"{n} frames are too few: a loop needs {shortest + fade}")
    thumbs = thumbnails(frames)
    dist = distances(thumbs)
    steps = np.diagonal(dist, offset=1)
    limit = float(np.percentile(steps, 99))
    candidates = [c for c in _shortlist(dist, fade, shortest) if c[0] <= 4.0 * max(limit, 1e-3)]
    passing = []  # (window cost, change, i, j), most alike first
    for cost, i, j in sorted(candidates):
        change = joint_change(thumbs, j - 1, i, fade)
        if change <= limit:
            passing.append((cost, change, i, j))
    if not passing:
        return LoopPlan(segments=(), fade=fade, reason="no pair of frames alike enough to join")
    landmarks = _Landmarks(frames)
    chosen, closest = [], math.inf
    for _, change, i, j in passing[:LANDMARK_CHECKS]:
        half = fade // 2  # the frames blended most evenly: where a ghost would show
        la, lb = landmarks(j - fade + half), landmarks(i - fade + half)
        if la is not None and lb is not None:
            offset = landmark_offset(la, lb)
            closest = min(closest, offset)
            if offset > LANDMARK_TOLERANCE:
                continue
        chosen.append((j - i, -change, i, j))
    if not chosen:
        return LoopPlan(
            segments=(), fade=fade,
            reason=f"the faces at the most alike frames are {closest:.1%} of the face width apart "
            f"(at most {LANDMARK_TOLERANCE:.1%})",
        )  # fmt: skip
    # Every joint kept is invisible by the two tests above: the longest loop repeats least.
    _, change, i, j = max(chosen)
    joint = Joint(after=j - 1, to=i, change=round(-change / max(limit, 1e-9), 4))
    return LoopPlan(segments=((i, j),), fade=fade, joints=(joint,))


def plan_cycle(
    frames: Sequence[np.ndarray], fps: int, digest: str, source_name: str, cache_dir: Path | None
) -> Cycle:
    """The avatar's cycle: a still is one frame; a clip long enough gets a loop plan (loaded
    from `cache_dir` when one was made for the same bytes, size and frame rate, else found and
    cached there; None: no cache). Falling back to ping-pong is logged once, here."""
    if len(frames) == 1:
        return ping_pong_cycle(frames)
    h, w = frames[0].shape[:2]
    meta = {"format": FORMAT, "source_digest": digest, "size": [w, h], "frames": len(frames), "fps": fps}
    path = cache_dir / f"{digest[:16]}-{w}x{h}-{fps}fps-loop.json" if cache_dir is not None else None
    started = time.perf_counter()
    short = len(frames) < min_segment(fps) + fade_frames(fps)
    plan = _load(path, meta) if path is not None and not short else None
    how = "loaded"
    if plan is None:
        plan, how = find_loop(frames, fps), "found"
        if path is not None and not short:  # a handful of frames is decided at once: no file
            _save(path, meta, plan)
    cycle = build_cycle(frames, plan)
    seconds = time.perf_counter() - started
    if plan.ping_pong:
        log.warning(
            "avatar %s: no good loop joint (%s); playing it forward then backward (ping-pong), "
            "so its motion reverses at both ends", source_name, plan.reason,
        )  # fmt: skip
    else:
        log.info(
            "avatar %s: loop of %s with %d-frame cross-fades (%s in %.2f s)",
            source_name, describe(plan), plan.fade, how, seconds,
        )  # fmt: skip
    return cycle


def describe(plan: LoopPlan) -> str:
    """'frames 12-97 (86), joint 96->12 at 0.62 of p99' or 'ping-pong (reason)'."""
    if plan.ping_pong:
        return f"ping-pong ({plan.reason})"
    parts = [f"frames {a}-{b - 1} ({b - a})" for a, b in plan.segments]
    joints = [f"joint {j.after}->{j.to} at {j.change:.2f} of p99 change" for j in plan.joints]
    return ", ".join(parts + joints)


def _save(path: Path, meta: dict, plan: LoopPlan) -> None:
    """Write the plan beside a temporary name, then swap it in (never a half file). The cache
    only saves time: a read-only disk is logged, not raised."""
    body = dict(meta, segments=[list(s) for s in plan.segments], fade=plan.fade, reason=plan.reason,
                joints=[[j.after, j.to, j.change] for j in plan.joints])  # fmt: skip
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(body), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        log.warning("cannot cache the avatar loop plan in %s (%s); it will be searched again next start", path, e)


def _load(path: Path, meta: dict) -> LoopPlan | None:
    """The cached plan when it was made for the same clip, size and rate and still fits it."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        if any(body.get(k) != v for k, v in meta.items()):
            return None
        plan = LoopPlan(
            segments=tuple((int(a), int(b)) for a, b in body["segments"]),
            fade=int(body["fade"]),
            joints=tuple(Joint(int(a), int(b), float(c)) for a, b, c in body["joints"]),
            reason=str(body["reason"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("avatar loop plan in %s is unreadable (%s); searching again", path, e)
        return None
    n = meta["frames"]
    if plan.fade != fade_frames(meta["fps"]) or not all(
        plan.fade <= a and a + plan.fade < b <= n for a, b in plan.segments
    ):
        log.warning("avatar loop plan in %s does not fit the clip; searching again", path)
        return None
    return plan
