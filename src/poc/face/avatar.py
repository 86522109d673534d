"""Avatars: their frames at the output size and the cycle played over them.

One frame counter drives the whole stream. `frame_number(counter)` maps it onto one position of
the avatar's cycle (face/loop.py): for a video, forward-only segments joined by short
cross-fades where two moments look alike, or, when the clip has no such moment, forward then
backward (ping-pong). Idle and talking frames share the same body frame at every counter value:
`frame_at(counter)` is the picture shown, `frame_number(counter)` the source frame whose
landmarks and prepared data the face engines draw on (at a cross-fade, the nearer of the two).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import attrs
import cv2
import numpy as np

from poc.errors import StartupError
from poc.face.loop import Cycle, ping_pong_cycle, plan_cycle
from poc.paths import RUN_DIR

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
# A clip's own frame rate is trusted within these bounds (slow motion and screen captures
# included); outside them it is a container's time base, not a rate.
MIN_CLIP_FPS, MAX_CLIP_FPS = 1.0, 240.0
DEFAULT_LOOP_CACHE = RUN_DIR / "avatars"  # beside the MuseTalk preparations (same key prefix)


class AvatarError(StartupError, ValueError):
    """The avatar source cannot be used (missing, unreadable, empty). The loader knows the
    file, not the setting that named it: callers pass the setting (load_avatars does)."""


@attrs.frozen
class Avatar:
    """Frames (uint8 HxWx3 BGR, C-contiguous, at the output size) of an image or a video."""

    frames: tuple[np.ndarray, ...]
    source: Path
    # Cache key for prepared data (MuseTalk's, the loop plan's): the sha256 of the source file,
    # or for a clip retimed to the stream's rate a digest of that and both rates (its frames
    # depend on the stream's rate too).
    source_digest: str
    # One pass of the loop; ping-pong over `frames` unless load_avatar found a loop.
    cycle: Cycle = attrs.field(
        default=attrs.Factory(lambda self: ping_pong_cycle(self.frames), takes_self=True), eq=False, repr=False
    )
    # sha256 of the source file's bytes: two avatars of the same bytes are one (load_avatars).
    file_sha256: str = attrs.field(default=attrs.Factory(lambda self: self.source_digest, takes_self=True), repr=False)

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.frames[0].shape[:2]
        return w, h

    @property
    def cycle_length(self) -> int:
        return len(self.cycle.numbers)

    def frame_number(self, counter: int) -> int:
        """The source frame (index into `frames`) the engines draw on at this counter value: the
        one shown, or, on a cross-faded frame, the nearer of the two blended."""
        return self.cycle.numbers[counter % len(self.cycle.numbers)]

    def frame_at(self, counter: int) -> np.ndarray:
        """The picture shown at this counter value (the same read-only object every cycle)."""
        return self.cycle.pictures[counter % len(self.cycle.pictures)]


def file_digest(path: Path) -> str:
    """sha256 of the file; AvatarError when it cannot be read (unreadable, vanished)."""
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as error:
        raise AvatarError(f"cannot read avatar file {path}: {error.strerror or error}") from None
    return h.hexdigest()


def fit_to_canvas(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale the image to fit inside width x height (keeping its aspect ratio) and fill the
    rest with a blurred, darkened enlargement of itself, so a square portrait fills a 16:9
    stream without black bars or distortion."""
    return CanvasFitter(width, height).fit(image)


class CanvasFitter:
    """`fit_to_canvas` for a run of frames (a video): the blurred surround, which is nearly all
    of the cost (a 25-pixel blur over the whole canvas: ~90 ms at 1280x720 here), is made from
    the first frame and reused, since a talking head's surround hardly changes between frames."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self._surround: np.ndarray | None = None
        self._source_shape: tuple[int, ...] | None = None

    def fit(self, image: np.ndarray) -> np.ndarray:
        width, height = self.width, self.height
        ih, iw = image.shape[:2]
        scale = min(width / iw, height / ih)
        fw, fh = max(1, round(iw * scale)), max(1, round(ih * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        fg = cv2.resize(image, (fw, fh), interpolation=interp)
        if (fw, fh) == (width, height):
            return np.ascontiguousarray(fg)
        if self._surround is None or self._source_shape != image.shape:
            self._surround = _blurred_surround(image, width, height)
            self._source_shape = image.shape
        canvas = self._surround.copy()
        ox, oy = (width - fw) // 2, (height - fh) // 2
        canvas[oy : oy + fh, ox : ox + fw] = fg
        return canvas


def _blurred_surround(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The image enlarged to cover width x height, blurred and darkened."""
    ih, iw = image.shape[:2]
    cover = max(width / iw, height / ih)
    cw, ch = max(width, round(iw * cover)), max(height, round(ih * cover))
    bg = cv2.resize(image, (cw, ch), interpolation=cv2.INTER_LINEAR)
    x0, y0 = (cw - width) // 2, (ch - height) // 2
    bg = bg[y0 : y0 + height, x0 : x0 + width]
    bg = cv2.GaussianBlur(bg, (0, 0), sigmaX=25)
    return np.ascontiguousarray((bg.astype(np.float32) * 0.55).astype(np.uint8))


def load_avatar(
    path: Path,
    width: int,
    height: int,
    max_frames: int = 600,
    *,
    fps: int = 30,
    loop_cache: Path | None = DEFAULT_LOOP_CACHE,
) -> Avatar:
    """Load an image (a still) or a video (up to max_frames frames) fitted to the output size.

    A video's cycle is planned for the stream's `fps` (its cross-fades last 200-400 ms of
    stream time) and the plan is cached in `loop_cache` (None: not cached)."""
    if not path.is_file():
        raise AvatarError(f"avatar file not found: {path}")
    step = 1.0  # source frames per stream frame
    if path.suffix.lower() in IMAGE_SUFFIXES:
        fitted = [_read_image(path, width, height)]
    else:
        fitted, step = _read_video(path, width, height, max_frames, fps)
    for f in fitted:
        f.setflags(write=False)  # shared by every tick; nobody may paint on them
    sha256 = file_digest(path)
    # A retimed clip's frames depend on the stream's rate: caches made for the same file at
    # another rate (or, same count, before clips were retimed) must not be taken for them.
    digest = sha256 if step == 1.0 else hashlib.sha256(f"{sha256} retimed {step!r}".encode()).hexdigest()
    cycle = plan_cycle(fitted, fps, digest, path.name, loop_cache)
    return Avatar(frames=tuple(fitted), source=path, source_digest=digest, cycle=cycle, file_sha256=sha256)


def check_decodes(path: Path) -> None:
    """AvatarError unless load_avatar could decode the file: an image decodes, a video gives
    its first frame. Cheap next to a load (no fitting, one frame, no loop plan): what a
    stations file reload checks before it stops a station to rebuild it on this file."""
    if not path.is_file():
        raise AvatarError(f"avatar file not found: {path}")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if cv2.imread(str(path), cv2.IMREAD_REDUCED_GRAYSCALE_8) is None:  # holds 1/64 of the pixels
            raise AvatarError(f"cannot read avatar image: {path}")
        return
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.read()[0]:
            raise AvatarError(f"cannot read any frame from avatar video: {path}")
    finally:
        capture.release()


def _read_image(path: Path, width: int, height: int) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise AvatarError(f"cannot read avatar image: {path}")
    return fit_to_canvas(image, width, height)


def _read_video(path: Path, width: int, height: int, max_frames: int, fps: int) -> tuple[list[np.ndarray], float]:
    """Up to max_frames stream frames of the clip, retimed to the stream's `fps` and fitted as
    each is decoded; and the source frames per stream frame it was retimed by.

    Stream frame k shows the source frame on screen at k / fps, so the clip plays at its own
    speed (one source frame per tick played a 60 fps phone clip at double speed): a 60 fps clip
    skips every other frame (grabbed, never decoded), a 25 fps one shows every fifth twice (the
    same array). Only one source frame is held at a time, so a 4K clip costs what its fitted
    frames cost (holding every decoded frame first took 15 GB for 600 frames of 4K)."""
    fitter = CanvasFitter(width, height)  # one blurred surround per clip, not per frame (~90 ms each at 720p)
    capture = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    try:
        step = _source_frames_per_tick(capture.get(cv2.CAP_PROP_FPS), fps)
        shown, picture = -1, None  # the source frame last decoded, fitted
        while len(frames) < max_frames:
            wanted = math.floor(len(frames) * step + 1e-9)
            while shown < wanted:
                if not capture.grab():
                    # The clip's n frames last n / source rate: as many ticks, rounded (one
                    # 25 fps frame is one tick at 30 fps, not two).
                    del frames[max(1, round((shown + 1) / step)) :]
                    break
                shown += 1
                if shown == wanted:
                    ok, raw = capture.retrieve()
                    picture = fitter.fit(raw) if ok else None
            if shown < wanted or picture is None:  # the clip ended (or a frame did not decode)
                break
            frames.append(picture)
    finally:
        capture.release()
    if not frames:
        raise AvatarError(f"cannot read any frame from avatar video: {path}")
    return frames, step


def _source_frames_per_tick(source_fps: float, fps: int) -> float:
    """Source frames per stream frame. A rate the container does not give, or gives as
    nonsense (0, NaN, a 1000 fps time base), plays one source frame per tick, as a clip at
    the stream's own rate does."""
    if not math.isfinite(source_fps) or not MIN_CLIP_FPS <= source_fps <= MAX_CLIP_FPS:
        return 1.0
    step = source_fps / fps
    # 29.97 on 30 (NTSC-rate cameras and phones) drifts 20 ms over a 20-s loop: not worth
    # retiming, which would only repeat the first frame.
    return 1.0 if abs(step - 1.0) < 0.005 else step


def load_avatars(
    idle: Path,
    talking: Path,
    width: int,
    height: int,
    idle_max_frames: int = 600,
    talking_max_frames: int = 600,
    *,
    idle_setting: str | None = None,
    talking_setting: str | None = None,
    fps: int = 30,
    loop_cache: Path | None = DEFAULT_LOOP_CACHE,
) -> tuple[Avatar, Avatar]:
    """The idle and the talking avatar, both fitted to the output size.

    When both name the same file, or files with the same bytes, the SAME object is returned
    twice: the compositor then keeps the shared body and blends only the mouth (no whole-frame
    cross-fade). The talking file is then loaded with the idle limit, as one avatar is.
    An AvatarError names `idle_setting` or `talking_setting`, the env names that chose the files.
    """
    try:
        idle_avatar = load_avatar(idle, width, height, max_frames=idle_max_frames, fps=fps, loop_cache=loop_cache)
    except AvatarError as error:
        raise error.with_setting(idle_setting) if idle_setting else error
    try:
        if not talking.is_file():
            raise AvatarError(f"avatar file not found: {talking}")
        if talking.resolve() == idle.resolve() or file_digest(talking) == idle_avatar.file_sha256:
            return idle_avatar, idle_avatar
        talking_avatar = load_avatar(talking, width, height, talking_max_frames, fps=fps, loop_cache=loop_cache)
        return idle_avatar, talking_avatar
    except AvatarError as error:
        raise error.with_setting(talking_setting) if talking_setting else error
