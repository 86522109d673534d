"""Life on any avatar: blinks, breath and a slow drift, drawn onto every picture that goes on air.

`Life.apply(k, picture)` is called by the compositor on the final picture of frame k (idle, or
talking with the mouth pasted), so blinks and breath carry on while the avatar speaks and the
switch between the two shows no jump, and the mouth moves with the head. It is a pure function
of (seed, origin, k, picture): a re-render of frame k is identical. The origin is the frame at
which life starts (0, or the frame on air when it was attached to a running stream); the motion
fades in over the first second after it, so attaching it shows no jump. It never writes to `picture` (avatar
frames are shared and read-only); it returns either `picture` itself (nothing moves at k) or a
fresh array.

A talking frame is drawn by `Life.apply_patched(k, body, patch, weight)`: the same picture as
`apply(k, body with the mouth pasted)`, pixel for pixel, at a fraction of the cost. The living
body frame is drawn once per pose and held (as for idle frames), copied, and only the pixels
that can sample the mouth through the displacement field are remapped anew from a small window
around it (docs/idle.md, "Cost").

The geometry (eye rectangles, the region of interest around the person) comes from the
avatar's landmarks, computed once when the Life is built. A video avatar's eyes are tracked per
source frame; its motion region covers the face over the whole clip.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from typing import Sequence

import attrs
import cv2
import numpy as np

from poc.face.avatar import IMAGE_SUFFIXES, Avatar
from poc.face.base import FacePatch
from poc.face.life.blink import BlinkSchedule, EyeWarp
from poc.face.life.boxes import Box, clip, grow, overlaps, union
from poc.face.life.breath import Motion, MotionField, MotionSignals

log = logging.getLogger(__name__)

FADE_IN_S = 1.0  # motion grows from nothing over this long after the origin (no jump on air)
MAX_REGION_PIXELS = 150_000  # the motion region's budget: ~0.5 ms of remap at 1280x720 here
CLOSURE_LEVELS = 16  # eye closure is drawn in 1/16 steps (maps are cached per step)
# Breath and drift move a few pixels over seconds (under 0.1 px a frame), so their pose is drawn
# anew about 15 times a second and held in between: an idle frame whose picture, pose and eyes
# are those of the frame before is that frame's output again, at no cost (docs/idle.md, "Cost").
MOTION_UPDATES_PER_S = 15
_EYE_CACHE = 128  # (source frame, level) eye maps kept


@attrs.frozen
class LifeOptions:
    """IDLE_BLINKS, IDLE_MOTION (amplitude scale, 0 = still) and IDLE_SEED."""

    blinks: bool = True
    motion: float = 1.0
    seed: int = 0

    @property
    def off(self) -> bool:
        return not self.blinks and self.motion <= 0


class Life:
    """Blinks and motion for one avatar. Build with `Life.for_avatar`; `Life.none()` does nothing."""

    def __init__(
        self,
        fps: int,
        options: LifeOptions,
        eyes: Sequence[tuple[EyeWarp, ...]] = (),
        frame_number=lambda k: 0,
        field: MotionField | None = None,
        face_height: float = 0.0,
    ) -> None:
        self.fps = fps
        self.options = options
        self._eyes = list(eyes)
        self._frame_number = frame_number
        self.field = field if options.motion > 0 else None
        self.blinks = BlinkSchedule(options.seed) if options.blinks and self._eyes else None
        self.signals = MotionSignals(options.seed, face_height, options.motion) if self.field else None
        self.origin = 0
        self._eye_maps: OrderedDict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._motion_step = max(1, round(fps / MOTION_UPDATES_PER_S))  # frames a pose is held
        # the last frame drawn: (its input picture, closure, pose frame) and the output
        self._last: tuple[np.ndarray, float, int] | None = None
        self._last_out: np.ndarray | None = None
        self._map_motion: Motion | None = None  # the motion the field's map was last filled for
        self._patched_body: np.ndarray | None = None  # the body of the last apply_patched

    @classmethod
    def none(cls) -> Life:
        return cls(1, LifeOptions(blinks=False, motion=0.0))

    def start_at(self, origin: int) -> Life:
        """Start life at frame `origin` (nothing is drawn before it); returns self."""
        self.origin = origin
        return self

    @property
    def active(self) -> bool:
        return self.blinks is not None or self.signals is not None

    @classmethod
    def for_avatar(cls, avatar: Avatar, fps: int, options: LifeOptions, landmarks: np.ndarray | None = None) -> Life:
        """Life for this avatar. `landmarks` (N, 68, 2), one set per source frame, are found
        here when not given. An avatar without a face gets no life (logged), never an error."""
        if options.off:
            return cls.none()
        if landmarks is None:
            landmarks = _find_landmarks(avatar)
            if landmarks is None:
                log.warning("no face found in the avatar %s: it will not blink or breathe", avatar.source.name)
                return cls.none()
        w, h = avatar.size
        eyes = [
            tuple(e for e in (EyeWarp.from_landmarks(lm[36:42], (w, h)), EyeWarp.from_landmarks(lm[42:48], (w, h))) if e)
            for lm in landmarks
        ]
        if not any(eyes):
            eyes = []
        field, face_height = _motion_field(landmarks, content_rect(avatar))
        return cls(fps, options, eyes, avatar.frame_number, field, face_height)

    def closure(self, k: int) -> float:
        """Eye closure at frame k, quantised as drawn: 0 open .. 1 closed."""
        if self.blinks is None or k < self.origin:
            return 0.0
        closure = self.blinks.closure((k - self.origin) / self.fps)
        # fully closed only while the lids are held shut, so the closed time is the schedule's
        return closure if closure >= 1.0 else min(CLOSURE_LEVELS - 1, round(closure * CLOSURE_LEVELS)) / CLOSURE_LEVELS

    def _state(self, k: int) -> tuple[float, Motion | None, int]:
        """Frame k's eye closure, its motion (None when nothing moves) and its pose's frame."""
        closure = self.closure(k)
        motion = None
        pose_frame = -1
        if self.signals is not None and k >= self.origin:
            pose_frame = (k - self.origin) // self._motion_step * self._motion_step
            t = pose_frame / self.fps
            motion = self.signals.at(t)
            if t < FADE_IN_S:
                motion = motion.scaled(t / FADE_IN_S)
        return closure, None if motion is None or motion.still else motion, pose_frame

    def apply(self, k: int, picture: np.ndarray) -> np.ndarray:
        """The picture of frame k with its blink and motion; `picture` itself when neither
        moves anything at k. Never writes to `picture`; what it returns must not be written
        to either (it may be returned again for the next frame)."""
        closure, motion, pose_frame = self._state(k)
        if closure <= 0 and motion is None:
            return picture
        last = self._last
        if last is not None and last[0] is picture and last[1] == closure and last[2] == pose_frame:
            return self._last_out  # type: ignore[return-value]
        out = self._draw(k, picture, closure, motion)
        self._last, self._last_out = (picture, closure, pose_frame), out
        return out

    def apply_patched(self, k: int, body: np.ndarray, patch: FacePatch, weight: float = 1.0) -> np.ndarray:
        """`apply(k, patch.pasted_on(body, weight))`, pixel for pixel, for a talking frame: the
        living body frame (what `apply(k, body)` draws, held with the pose between updates) with
        only the pixels the patch can reach through the motion drawn anew. A fresh array, or
        the pasted picture when nothing moves at k; never writes to `body` or `patch`."""
        closure, motion, _ = self._state(k)
        px, py = patch.x, patch.y
        rect = (px, py, px + patch.width, py + patch.height)
        if closure <= 0 and motion is None:
            return patch.pasted_on(body, weight)
        mouth = patch.blended_over(body, weight)  # the patch rectangle as the compositor pastes it
        eyes = self._eyes[self._frame_number(k) % len(self._eyes)] if closure > 0 else ()
        if any(_changes(body, mouth, rect, _rect(e)) for e in eyes):
            return self.apply(k, patch.pasted_on(body, weight))  # the lid closes over the mouth's pixels
        # The living body is drawn once per pose and held: copy it. A body unlike the last one
        # here (a video avatar's next frame) is drawn now for this frame alone: write into it,
        # unless it is the held output of the frame before (already on its way to air).
        reuse, self._patched_body = body is self._patched_body, body
        held = self._last_out
        out = self.apply(k, body)
        if reuse or out is held:
            out = out.copy()
        else:
            self._last = self._last_out = None
        out[py : rect[3], px : rect[2]] = mouth  # as pasted; inside the region it is redrawn below
        redrawn = None if motion is None else self._move_mouth(k, body, out, mouth, rect, closure, eyes, motion)
        for eye in eyes:  # an eye the motion does not move is closed last, over what was pasted
            moved = motion is not None and _contains(self.field.roi, eye)  # type: ignore[union-attr]
            if not moved and (overlaps(rect, _rect(eye)) or (redrawn is not None and overlaps(redrawn, _rect(eye)))):
                self._close(k, eye, closure, body, out, 0, 0)
        return out

    def _move_mouth(self, k: int, body: np.ndarray, out: np.ndarray, mouth: np.ndarray, rect: Box, closure: float,
                    eyes: Sequence[EyeWarp], motion: Motion) -> Box | None:  # fmt: skip
        """Redraw into `out` the pixels of the motion region that sample the mouth pasted at
        `rect`, through frame k's motion; returns the box redrawn (None: the mouth is outside)."""
        assert self.field is not None
        roi = self.field.roi
        inside = clip(rect, roi)
        if inside is None:
            return None
        if self._map_motion != motion:  # the body came from the cache of another picture's draw
            self.field.update(motion)
            self._map_motion = motion
        # output pixels within `reach` (+1 for the bilinear neighbour, +1 spare) of the mouth can
        # sample it; they in turn sample the source window around them
        reach = math.ceil(self.field.reach) + 2
        box = grow(inside, reach, roi)
        window = grow(box, reach, roi)
        closing = [e for e in eyes if _contains(roi, e) and overlaps(window, _rect(e))]
        for eye in closing:  # closed in the source first, as _draw does: it must lie whole in it
            window = union(window, _rect(eye))
        wx0, wy0, wx1, wy1 = window
        source = body[wy0:wy1, wx0:wx1].copy()
        part = clip(rect, window)
        if part is not None:
            source[part[1] - wy0 : part[3] - wy0, part[0] - wx0 : part[2] - wx0] = mouth[
                part[1] - rect[1] : part[3] - rect[1], part[0] - rect[0] : part[2] - rect[0]
            ]
        for eye in closing:
            self._close(k, eye, closure, body, source, wx0, wy0)
        x0, y0 = roi[0], roi[1]
        bx0, by0, bx1, by1 = box
        # the map in the window's coordinates: shifting float32 coordinates by whole pixels is
        # exact (cv2.subtract: numpy's broadcast over the 2-channel map is 15x slower)
        block = self.field.map[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0]
        mapping = cv2.subtract(block, (float(wx0 - x0), float(wy0 - y0), 0.0, 0.0))
        cv2.remap(source, mapping, None, cv2.INTER_LINEAR, dst=out[by0:by1, bx0:bx1],
                  borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
        return box

    def _draw(self, k: int, picture: np.ndarray, closure: float, motion: Motion | None) -> np.ndarray:
        moving = motion is not None
        eyes = self._eyes[self._frame_number(k) % len(self._eyes)] if closure > 0 else ()
        if not moving:
            out = picture.copy()
            for eye in eyes:
                self._close(k, eye, closure, picture, out, 0, 0)
            return out
        assert self.field is not None and motion is not None
        x0, y0, x1, y1 = self.field.roi
        source = picture[y0:y1, x0:x1]
        inside = [e for e in eyes if _contains(self.field.roi, e)]
        if inside:
            source = source.copy()  # the eyes close first, then the head moves them
            for eye in inside:
                self._close(k, eye, closure, picture, source, x0, y0)
        out = picture.copy()  # one plain copy beats copying around the region (strided)
        self._map_motion = motion
        cv2.remap(source, self.field.update(motion), None, cv2.INTER_LINEAR, dst=out[y0:y1, x0:x1],
                  borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
        for eye in eyes:
            if eye not in inside:
                self._close(k, eye, closure, picture, out, 0, 0)
        return out

    def _close(self, k: int, eye: EyeWarp, closure: float, picture: np.ndarray, out: np.ndarray,
               ox: int, oy: int) -> None:  # fmt: skip
        """Remap one eye of `picture` into `out` (whose origin is at (ox, oy) of the frame)."""
        key = (self._frame_number(k) % len(self._eyes), id(eye), round(closure * CLOSURE_LEVELS))
        maps = self._eye_maps.get(key)
        if maps is None:
            maps = eye.maps(closure)
            self._eye_maps[key] = maps
            if len(self._eye_maps) > _EYE_CACHE:
                self._eye_maps.popitem(last=False)
        x, y = eye.x, eye.y
        src = picture[y : y + eye.height, x : x + eye.width]
        dst = out[y - oy : y - oy + eye.height, x - ox : x - ox + eye.width]
        cv2.remap(src, maps[0], maps[1], cv2.INTER_LINEAR, dst=dst, borderMode=cv2.BORDER_REPLICATE)


def _rect(eye: EyeWarp) -> Box:
    return eye.x, eye.y, eye.x + eye.width, eye.y + eye.height


def _changes(picture: np.ndarray, pixels: np.ndarray, rect: Box, box: Box) -> bool:
    """Whether `pixels`, pasted at `rect`, change any pixel of `picture` inside `box` (a
    MuseTalk patch's feathered edge is the body's own pixels, and may reach an eye's box)."""
    part = clip(rect, box)
    if part is None:
        return False
    x0, y0, x1, y1 = part
    return not np.array_equal(pixels[y0 - rect[1] : y1 - rect[1], x0 - rect[0] : x1 - rect[0]], picture[y0:y1, x0:x1])


def _contains(roi: tuple[int, int, int, int], eye: EyeWarp) -> bool:
    x0, y0, x1, y1 = roi
    return x0 <= eye.x and y0 <= eye.y and eye.x + eye.width <= x1 and eye.y + eye.height <= y1


def _find_landmarks(avatar: Avatar) -> np.ndarray | None:
    from poc.face.landmarks import NoFaceFound, detect_landmarks
    from poc.face.warp import track_landmarks

    try:
        if len(avatar.frames) == 1:
            return detect_landmarks(avatar.frames[0])[None]
        return track_landmarks(avatar.frames)
    except NoFaceFound:
        return None


def content_rect(avatar: Avatar) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the avatar's own pixels in the output frame: fit_to_canvas scales the
    source to fit and fills the rest with a blurred surround, which must not move. The whole
    frame when the source's size cannot be read again."""
    w, h = avatar.size
    try:
        if avatar.source.suffix.lower() in IMAGE_SUFFIXES:
            image = cv2.imread(str(avatar.source), cv2.IMREAD_COLOR)  # as load_avatar reads it
            ih, iw = image.shape[:2]
        else:
            capture = cv2.VideoCapture(str(avatar.source))
            iw, ih = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
            capture.release()
        scale = min(w / iw, h / ih)
    except (AttributeError, ZeroDivisionError, cv2.error):
        return 0, 0, w, h
    fw, fh = max(1, round(iw * scale)), max(1, round(ih * scale))  # as CanvasFitter.fit
    ox, oy = (w - fw) // 2, (h - fh) // 2
    return max(0, ox), max(0, oy), min(w, ox + fw), min(h, oy + fh)


def _motion_field(landmarks: np.ndarray, content: tuple[int, int, int, int]) -> tuple[MotionField | None, float]:
    """The motion region around the face (over every source frame): head and shoulders,
    clipped to the avatar's own pixels."""
    jaw, brows = landmarks[:, 0:17], landmarks[:, 17:27]
    left, right = float(jaw[..., 0].min()), float(jaw[..., 0].max())
    top, chin = float(brows[..., 1].min()), float(landmarks[:, 8, 1].max())
    fw, fh = right - left, chin - top
    if fw < 16 or fh < 16:
        return None, 0.0
    cx = (left + right) / 2
    cx0, cy0, cx1, cy1 = content
    # head and shoulders; the size is the cost (the remap is ~3 ns a pixel here), so a region
    # over MAX_REGION_PIXELS (a close-up face) shrinks about the face until it fits
    left_, right_, above, below = 1.6 * fw, 1.6 * fw, 1.2 * fh, 1.45 * fh
    clipped = (min(cx1, cx + right_) - max(cx0, cx - left_)) * (min(cy1, chin + below) - max(cy0, top - above))
    shrink = min(1.0, (MAX_REGION_PIXELS / max(clipped, 1.0)) ** 0.5)
    middle = (top + chin) / 2
    x0, x1 = max(cx0, round(cx - shrink * left_)), min(cx1, round(cx + shrink * right_))
    y0 = max(cy0, round(middle - shrink * (middle - top + above)))
    y1 = min(cy1, round(middle + shrink * (chin - middle + below)))
    if x1 - x0 < 64 or y1 - y0 < 64:
        return None, 0.0
    field = MotionField(
        (x0, y0, x1, y1), head=(cx, top + 0.15 * fh), pivot=(cx, chin + 0.15 * fh),
        head_radius=0.8 * max(fw, fh), body_top=top - 0.6 * fh, chest=chin + 0.9 * fh,
    )  # fmt: skip
    return field, fh
