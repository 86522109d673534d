"""The idle loop of a video avatar: forward-only segments joined where two frames look alike.

Playing a clip forward then backward (ping-pong) never jumps, but every head drift visibly
reverses at the clip's ends. Instead we look for a pair of moments in the clip that look alike
(pixels of a small grey thumbnail, then the face landmarks) and play forward from one to the
other, over and over. At each joint the last `fade` frames of the ending segment are cross-faded
with the `fade` frames that lead into the next segment's first frame, so both streams keep moving
forward while the picture slides from one to the other (200-400 ms, `fade_frames`).

Search. Every candidate joint (after frame j-1 play frame i, i < j: a jump back of at least a
second) is first ranked cheaply by the mean thumbnail distance along its fade window (frames
j-fade..j-1 against i-fade..i-1: sums along the diagonals of the distance matrix). Those within 4x
the clip's 99th-percentile frame-to-frame change are then checked exactly, all at once: the
largest frame-to-frame change of the cross-faded thumbnails across the joint must not exceed that
99th percentile (computed from the thumbnails' dot products, no picture built). The joints that
pass are chained into the cycle that plays the most distinct frames (`loop_cycle`): one joint
(j -> i) plays frames i..j-1; several overlapping ones play more, e.g. alike pairs (10, 100) and
(90, 190) make 10..189 then 90..99 (180 frames, where either alone gives 100). Several joints
are taken only when they play at least a second more than the best single one; ties go to the
fewest joints, then the least change. Last, the face landmarks of the two frames blended half
and half at each chosen joint must agree within `LANDMARK_TOLERANCE` of the face width, so the
cross-fade never shows a ghost of a second face: the `LANDMARK_SEEDS` most alike joints are
checked first, then the chosen cycle's; a joint failing is dropped (with its neighbours within
half a fade) and the cycle searched again, `LANDMARK_CHECKS` joints at most, then only joints
that passed are used. A clip with no such joint falls back to ping-pong, and says so in the log
once.

Engines draw the mouth on body frames by source frame number (`Cycle.numbers`). A cross-faded
frame is a blend of two source frames: its number is the NEARER one (the one with the larger
weight; the incoming frame at exactly half), whose landmarks are within the tolerance above of
the blend's, and the engines paint on the blended picture itself (`Cycle.pictures`), so the
patch border matches the body the viewer sees.

Cost: the plan for 600 frames at 1280x720 takes one to two seconds (thumbnails, landmark
detections, then the exact checks of ~90,000 joints at ~0.1 s; each cycle search a few ms) and is
cached as a small JSON file keyed by the source's digest, the output size and the frame rate;
the blended pictures (fade frames per joint) are rebuilt at load.
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

from poc.face.loop_cycle import longest_cycle

log = logging.getLogger(__name__)

FORMAT = 2  # bump when the cached plan's meaning changes (2: several segments per loop)
FADE_SECONDS = 0.3  # cross-fade at each joint; always kept within FADE_RANGE
FADE_RANGE = (0.2, 0.4)
THUMB_SIZE = (64, 36)  # (w, h) of the grey thumbnails the pixel distances are measured on
MIN_SEGMENT_SECONDS = 1.0  # a shorter loop repeats too visibly to be worth it; also the least jump back
LANDMARK_TOLERANCE = 0.02  # mean landmark distance at a joint, as a fraction of the face width
# (2.6 px for a 130-px face at 720p: dlib's own jitter is about a pixel)
LANDMARK_SEEDS = 8  # the most alike joints, checked first (the one-joint search checked just these)
LANDMARK_CHECKS = 32  # joints checked for landmarks before using only those that passed
# (each at most two detections inside the face's box: 4 ms at 360p, 10 ms at 720p; the first
# whole-frame search costs 0.2-0.5 s once)


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
    """The shortest loop worth it, and the least jump back a joint makes: a second, and room
    for its fade and more. (One segment of a loop of several may be as short as fade + 1.)"""
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


def gram(thumbs: np.ndarray) -> np.ndarray:
    """(N, N) dot products between every two thumbnails (float64: differences of them stay exact)."""
    x = thumbs.astype(np.float64)
    return x @ x.T


def distances(products: np.ndarray, pixels: int) -> np.ndarray:
    """(N, N) RMS pixel difference between every two thumbnails, from their `gram`."""
    sq = np.diagonal(products)
    d2 = sq[:, None] + sq[None, :] - 2.0 * products
    return np.sqrt(np.maximum(d2, 0.0) / pixels)


def joint_changes(products: np.ndarray, pixels: int, after: np.ndarray, to: np.ndarray, fade: int) -> np.ndarray:
    """Per joint, the largest RMS change between consecutive shown thumbnails from the frame
    before the fade, through the cross-fade from `after` into `to`, to frame `to` itself.

    Shown picture m (0..fade+1) is (1 - w) * frame[after - fade + m] + w * frame[to - fade - 1 + m]
    with w = m / (fade + 1), so the change from picture m to m + 1 is a sum of four thumbnails
    and its squared length a sum of their dot products: no picture is built."""
    n = len(products)
    m = np.arange(fade + 1)
    w0, w1 = m / (fade + 1), (m + 1) / (fade + 1)
    # Outgoing frame a, incoming frame b of picture m, per (joint, m). Only a + 1 (= N at the
    # last step) and b (= -1 at the first) can leave the clip, and only where their weight is 0.
    a = after[:, None] - fade + m
    b = to[:, None] - fade - 1 + m
    a1, b0 = np.minimum(a + 1, n - 1), np.maximum(b, 0)
    own, next_ = np.diagonal(products), np.diagonal(products, offset=1)  # x_k.x_k, x_k.x_(k+1)
    sq = (
        (1 - w1) ** 2 * own[a1] + (1 - w0) ** 2 * own[a] - 2 * (1 - w1) * (1 - w0) * next_[np.minimum(a, n - 2)]
        + w1**2 * own[b + 1] + w0**2 * own[b0] - 2 * w1 * w0 * next_[b0]
        + 2 * ((1 - w1) * w1 * products[a1, b + 1] - (1 - w1) * w0 * products[a1, b0]
               - (1 - w0) * w1 * products[a, b + 1] + (1 - w0) * w0 * products[a, b0])
    )  # fmt: skip
    return np.sqrt(np.maximum(sq, 0.0) / pixels).max(axis=1)


def _alike_pairs(
    dist: np.ndarray, fade: int, shortest: int, ceiling: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every joint (start i, end j, window cost) whose fade windows (frames j-fade..j-1 against
    i-fade..i-1) differ by at most `ceiling` on average, fade <= i, i + shortest <= j <= N."""
    n = len(dist)
    size = n + 1 - fade  # i and j run over fade..N
    window = np.zeros((size, size))
    for u in range(fade):  # window[i - fade, j - fade] sums dist[i - fade + u, j - fade + u]
        window += dist[u : u + size, u : u + size]
    window /= fade
    rows, cols = np.indices(window.shape)
    i, j = np.nonzero((cols - rows >= shortest) & (window <= ceiling))
    return i + fade, j + fade, window[i, j]


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
    products, pixels = gram(thumbs), thumbs.shape[1]
    dist = distances(products, pixels)
    steps = np.diagonal(dist, offset=1)
    # The clip's own 99th-percentile change; 1e-3 grey levels at least, so that a clip of one
    # picture repeated loops (its changes are 0 but for the rounding of the dot products).
    limit = max(float(np.percentile(steps, 99)), 1e-3)
    starts, ends, alike = _alike_pairs(dist, fade, shortest, 4.0 * limit)
    changes = np.concatenate(  # in chunks: a still clip passes most of N^2/2 pairs to here
        [joint_changes(products, pixels, ends[k : k + 50_000] - 1, starts[k : k + 50_000], fade)
         for k in range(0, len(starts), 50_000)] or [np.zeros(0)]
    )  # fmt: skip
    keep = changes <= limit
    starts, ends, alike, costs = starts[keep], ends[keep], alike[keep], changes[keep] / limit
    if not len(starts):
        return LoopPlan(segments=(), fade=fade, reason="no pair of frames alike enough to join")
    # Several joints only for a second or more of extra frames (MIN_SEGMENT_SECONDS again):
    # each repeats part of the clip within the cycle, and two from one alike stretch gain little.
    order, closest = _checked_cycle(frames, fade, shortest, starts, ends, costs, alike)
    if order is None:
        return LoopPlan(
            segments=(), fade=fade,
            reason=f"the faces at the best joints are {closest:.1%} of the face width apart "
            f"(at most {LANDMARK_TOLERANCE:.1%})",
        )  # fmt: skip
    # Playing order: from each joint's landing forward to the next joint's leaving point.
    landings = [int(starts[k]) for k in order]
    leavings = [int(ends[k]) for k in order[1:] + order[:1]]
    segments = tuple(zip(landings, leavings))
    taken = order[1:] + order[:1]  # the joint at the end of each segment
    joints = tuple(Joint(after=int(ends[k]) - 1, to=int(starts[k]), change=round(float(costs[k]), 4)) for k in taken)
    return LoopPlan(segments=segments, fade=fade, joints=joints)


def _checked_cycle(
    frames: Sequence[np.ndarray], fade: int, gain: int,
    starts: np.ndarray, ends: np.ndarray, costs: np.ndarray, alike: np.ndarray,
) -> tuple[list[int] | None, float]:
    """The longest cycle (loop_cycle.longest_cycle) of joints whose faces also agree. The
    LANDMARK_SEEDS most alike joints (by `alike`, the window cost) are checked first, so the
    answer is never worse than a loop among them. Then the joints of the best cycle are checked,
    one failing is dropped with its near neighbours and the cycle searched again; after
    LANDMARK_CHECKS checks in all, only joints that passed are used. Returns the joints in
    playing order (None: none left) and the smallest landmark offset seen among failures."""
    landmarks = _Landmarks(frames)
    alive = np.ones(len(starts), bool)
    passed: set[int] = set()
    checks, closest = 0, math.inf
    half = fade // 2  # the frames blended most evenly: where a ghost would show

    def check(k: int) -> bool:
        nonlocal checks, closest
        checks += 1
        la, lb = landmarks(int(ends[k]) - fade + half), landmarks(int(starts[k]) - fade + half)
        offset = landmark_offset(la, lb) if la is not None and lb is not None else 0.0
        if offset <= LANDMARK_TOLERANCE:
            passed.add(k)
            return True
        closest = min(closest, offset)
        # Its neighbours (landing and leaving within half a fade) show nearly the same two
        # faces: drop them unchecked, or one bad pair of moments eats every check.
        alive[(np.abs(starts - starts[k]) <= half) & (np.abs(ends - ends[k]) <= half)] = False
        alive[list(passed)] = True
        return False

    for k in np.argsort(alike, kind="stable")[:LANDMARK_SEEDS]:
        if alive[k]:
            check(int(k))
    while True:
        alive_idx = np.flatnonzero(alive)
        found = longest_cycle(starts[alive_idx], ends[alive_idx], costs[alive_idx], fade + 1, gain)
        if found is None:
            return None, closest
        order = [int(alive_idx[k]) for k in found]
        unchecked = sorted((k for k in order if k not in passed), key=lambda k: -costs[k])
        if not unchecked:
            return order, closest
        if checks >= LANDMARK_CHECKS:  # out of checks: what is already known to pass
            alive &= np.isin(np.arange(len(starts)), list(passed))
            continue
        for k in unchecked:  # the least alike first: the likeliest to fail
            if not check(k) or checks >= LANDMARK_CHECKS:
                break


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
    n, count = meta["frames"], len(plan.segments)
    # Each joint leaves at the end of its segment and lands on the start of the next one.
    chained = [(j.after, j.to) for j in plan.joints] == [
        (stop - 1, plan.segments[(k + 1) % count][0]) for k, (_, stop) in enumerate(plan.segments)
    ]
    if plan.fade != fade_frames(meta["fps"]) or not chained or not all(
        plan.fade <= a and a + plan.fade < b <= n for a, b in plan.segments
    ):
        log.warning("avatar loop plan in %s does not fit the clip; searching again", path)
        return None
    return plan
