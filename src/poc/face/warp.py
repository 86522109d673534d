"""The default CPU talking-face engine: a mouth warp driven by visemes or the audio envelope.

At construction the engine finds the face landmarks of every avatar frame (once; a video's are
tracked frame to frame and smoothed over time so the mouth does not shimmer) and checks that
each frame can carry the warp, so an avatar with no such frame fails at start-up with one clear
line. A video's frames whose face cannot (too small: the presenter far away or turned) show the
idle face whatever is said: the mouth rests there, as the warp has nothing to move.
Per slot, `MouthTrack` (visemes.py) turns phonemes or loudness into a smoothed `MouthPose`, and
the frame's `MouthRig` (mouth.py) renders the lower face at that pose onto the body frame of the
slot's index. A silent slot at rest returns no patch, so the compositor shows the idle frame.

Cost: landmarks ~0.25 s for the first frame (plus ~0.3 s to load dlib's model once per
process) and ~10 ms per further video frame; a rig ~1 ms per distinct frame (kept in a small
cache); a rendered frame well under a millisecond at 720p.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Sequence

import numpy as np

from poc.face.avatar import Avatar
from poc.face.base import AvatarFaceError, EngineError, FacePatch, RenderedFrame, SpeechSlot
from poc.face.landmarks import NoFaceFound, detect_landmarks
from poc.face.mouth import MouthPose, MouthRig, RigError, check_face
from poc.face.visemes import LOOKAHEAD, MouthTrack, TrackedSlot

log = logging.getLogger(__name__)

RIG_CACHE_SIZE = 64  # rigs kept for a video avatar (~0.5 MB each at 720p, ~1 ms to rebuild)
LANDMARK_SMOOTHING_FRAMES = 1.5  # sigma of the temporal smoothing of a video's landmarks
RENDER_BUDGET_S = 0.03  # generous allowance for rendering one batch of frames
BATCH_SIZE = 6  # slots per feed: a few ms each, so a batch is well inside RENDER_BUDGET_S


def _detect_near(frame: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
    """Landmarks of `frame`, searched around the previous frame's face first (much faster than
    the whole frame), then over the whole frame."""
    if previous is not None:
        h, w = frame.shape[:2]
        (x0, y0), (x1, y1) = previous.min(axis=0), previous.max(axis=0)
        mx, my = (x1 - x0) * 0.8 + 8, (y1 - y0) * 0.8 + 8
        cx0, cy0 = int(max(0, x0 - mx)), int(max(0, y0 - my))
        cx1, cy1 = int(min(w, x1 + mx)), int(min(h, y1 + my))
        # dlib's detector finds faces from ~80 px; only smaller ones need the 2x upsampling.
        upsample = 0 if (x1 - x0) >= 100 else 1
        try:
            found = detect_landmarks(frame[cy0:cy1, cx0:cx1], upsample=upsample)
            return found + np.array([cx0, cy0], dtype=np.float32)
        except NoFaceFound:
            pass
    return detect_landmarks(frame)


def track_landmarks(frames: Sequence[np.ndarray]) -> np.ndarray:
    """Landmarks (N, 68, 2) for every frame, smoothed over time for a video.

    Frames where no face is found take the nearest found frame's landmarks; if no frame has a
    face, raises NoFaceFound.
    """
    found: list[np.ndarray | None] = []
    previous = None
    for frame in frames:
        try:
            previous = _detect_near(frame, previous)
        except NoFaceFound:
            previous = None
        found.append(previous)
    good = [i for i, lm in enumerate(found) if lm is not None]
    if not good:
        raise NoFaceFound("no face found in the avatar")
    filled = np.stack(
        [found[i] if found[i] is not None else found[min(good, key=lambda g: abs(g - i))]
         for i in range(len(frames))]
    ).astype(np.float64)
    return _smooth_over_time(filled).astype(np.float32)


def _warp_problems(landmarks: np.ndarray) -> dict[int, str]:
    """Why each frame whose landmarks cannot carry the warp cannot, by frame number."""
    problems = {}
    for number, face in enumerate(landmarks):
        try:
            check_face(face)
        except RigError as exc:
            problems[number] = str(exc)
    return problems


def _smooth_over_time(tracks: np.ndarray) -> np.ndarray:
    """Local linear regression of each coordinate over neighbouring frames (Gaussian weights).

    This removes the detector's frame-to-frame jitter but, unlike a plain blur, follows a head
    that keeps moving, even at the first and last frames, so the rig never lags the face.
    """
    n = len(tracks)
    out = np.empty_like(tracks)
    radius = int(np.ceil(3 * LANDMARK_SMOOTHING_FRAMES))
    for i in range(n):
        lo, hi = max(0, i - radius), min(n, i + radius + 1)
        dt = np.arange(lo, hi, dtype=np.float64) - i
        w = np.exp(-0.5 * (dt / LANDMARK_SMOOTHING_FRAMES) ** 2)
        s0, s1, s2 = w.sum(), (w * dt).sum(), (w * dt * dt).sum()
        y = tracks[lo:hi]
        wy = np.tensordot(w, y, axes=1)
        wty = np.tensordot(w * dt, y, axes=1)
        det = s0 * s2 - s1 * s1
        out[i] = wy / s0 if det < 1e-9 else (s2 * wy - s1 * wty) / det
    return out


class WarpEngine:
    """FaceEngine that warps the avatar's own mouth; CPU only, a few ms per frame at most."""

    name = "warp"

    def __init__(self, avatar: Avatar, fps: int, sample_rate: int) -> None:
        if fps <= 0 or sample_rate <= 0:
            raise EngineError(
                f"warp engine: fps and sample rate must be positive (got {fps}, {sample_rate})"
            )
        self.avatar = avatar
        self.fps = fps
        self.sample_rate = sample_rate
        started = time.perf_counter()
        try:
            self._landmarks = track_landmarks(avatar.frames)
        except NoFaceFound as exc:
            raise AvatarFaceError(f"warp engine: {exc} ({avatar.source})") from None
        self._rigs: OrderedDict[int, MouthRig] = OrderedDict()
        self._rigs_lock = threading.Lock()  # an interrupted utterance may overlap the next
        problems = _warp_problems(self._landmarks)
        if len(problems) == len(avatar.frames):
            raise AvatarFaceError(f"warp engine: {problems[0]} ({avatar.source})")
        if problems:
            log.warning(
                "warp engine: the face in %d of %d avatar frames cannot carry the mouth warp (%s); "
                "the mouth rests on those frames", len(problems), len(avatar.frames), next(iter(problems.values())),
            )  # fmt: skip
        self._resting = frozenset(problems)  # source frames shown with the idle face
        first = min(set(range(len(avatar.frames))) - self._resting)
        try:
            self.rig(first)  # a face too odd to warp fails now, not on air
        except RigError as exc:
            raise AvatarFaceError(f"warp engine: {exc} ({avatar.source})") from None
        log.info(
            "warp engine ready: %d avatar frame(s), landmarks in %.2f s",
            len(avatar.frames),
            time.perf_counter() - started,
        )

    @property
    def lead_seconds(self) -> float:
        # Frames come out LOOKAHEAD slots after their audio, plus a little rendering time.
        return LOOKAHEAD / self.fps + RENDER_BUDGET_S

    @property
    def lookahead_seconds(self) -> float:
        return LOOKAHEAD / self.fps

    @property
    def improves_with_later_audio(self) -> bool:
        return False  # the mouth follows the loudness and phonemes within the look-ahead only

    @property
    def batch_size(self) -> int:
        return BATCH_SIZE

    def warm_up(self) -> None:
        """Nothing to do: the landmarks and the first rig were built with the engine."""

    def rig(self, frame_number: int) -> MouthRig:
        """The warp of one source frame, built on first use and cached."""
        with self._rigs_lock:
            rig = self._rigs.get(frame_number)
            if rig is not None:
                self._rigs.move_to_end(frame_number)
                return rig
        rig = MouthRig(self.avatar.frames[frame_number], self._landmarks[frame_number])
        with self._rigs_lock:
            self._rigs[frame_number] = rig
            if len(self._rigs) > RIG_CACHE_SIZE:
                self._rigs.popitem(last=False)
        return rig

    def can_warp(self, frame_number: int) -> bool:
        """Whether this source frame's face can carry the warp (else the mouth rests there)."""
        return frame_number not in self._resting

    def render(self, index: int, pose: MouthPose) -> FacePatch | None:
        """The face patch for frame counter `index` with the mouth at `pose`; None (the idle
        face) on a frame whose face cannot carry the warp."""
        number = self.avatar.frame_number(index)
        if not self.can_warp(number):
            return None
        rig = self.rig(number)
        # The rig (landmarks) is the source frame's; the pixels are the picture shown, which at a
        # loop joint is a cross-fade of two frames, so the patch's border matches the body.
        pixels = rig.render(self.avatar.frame_at(index), pose)
        return FacePatch(x=rig.x, y=rig.y, pixels=pixels)

    def start_utterance(self) -> WarpUtterance:
        return WarpUtterance(self)

    def close(self) -> None:
        with self._rigs_lock:
            self._rigs.clear()


class WarpUtterance:
    """One message: one RenderedFrame per slot, in order, LOOKAHEAD slots behind the input."""

    def __init__(self, engine: WarpEngine) -> None:
        self._engine = engine
        self._track = MouthTrack(engine.fps)
        self._finished = False
        self.failures = 0  # a warp fault raises: the pipeline catches and counts it

    def hear(self, slots: Sequence[SpeechSlot]) -> None:
        """A no-op: the mouth track looks only LOOKAHEAD slots ahead, within what is fed."""

    def feed(self, slots: Sequence[SpeechSlot]) -> list[RenderedFrame]:
        if self._finished:
            raise RuntimeError("warp utterance: feed() after finish()")
        out: list[RenderedFrame] = []
        for slot in slots:
            audio = slot.audio
            if not isinstance(audio, np.ndarray) or audio.ndim != 1 or audio.dtype != np.int16:
                raise ValueError(
                    f"warp utterance: slot {slot.index} audio must be 1-D int16 samples"
                )
            out.extend(self._render(t) for t in self._track.push(slot))
        return out

    def finish(self) -> list[RenderedFrame]:
        if self._finished:
            return []
        self._finished = True
        return [self._render(t) for t in self._track.finish()]

    def _render(self, tracked: TrackedSlot) -> RenderedFrame:
        index = tracked.slot.index
        if tracked.silent and tracked.pose.is_rest:
            return RenderedFrame(index=index, patch=None)
        return RenderedFrame(index=index, patch=self._engine.render(index, tracked.pose))


def bench_render(engine: WarpEngine, frames: int = 250) -> float:
    """Mean milliseconds to render one talking frame (poses sweeping the whole range), with
    the rigs already built: the steady-state cost on air, single thread."""
    poses = [
        MouthPose(open=float(np.sin(i * 0.37)), width=float(np.sin(i * 0.23)))
        for i in range(frames)
    ]
    for i in range(min(frames, engine.avatar.cycle_length)):
        if engine.can_warp(engine.avatar.frame_number(i)):
            engine.rig(engine.avatar.frame_number(i))
    started = time.perf_counter()
    for i, pose in enumerate(poses):
        engine.render(i, pose)
    return (time.perf_counter() - started) / frames * 1000.0
