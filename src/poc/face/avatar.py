"""Avatars: their frames at the output size and the ping-pong cycle over them.

One frame counter drives the whole stream. `frame_number(counter)` maps it onto the source
frames forward then backward (0,1,..,N-1,N-2,..,1,0,..), so the loop never jumps and idle and
talking frames share the same body pose at every counter value.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import attrs
import cv2
import numpy as np

from poc.errors import StartupError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


class AvatarError(StartupError, ValueError):
    """The avatar source cannot be used (missing, unreadable, empty). The loader knows the
    file, not the setting that named it: callers pass the setting (load_avatars does)."""


@attrs.frozen
class Avatar:
    """Frames (uint8 HxWx3 BGR, C-contiguous, at the output size) of an image or a video."""

    frames: tuple[np.ndarray, ...]
    source: Path
    source_digest: str  # sha256 of the source file: cache key for prepared data

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.frames[0].shape[:2]
        return w, h

    @property
    def cycle_length(self) -> int:
        n = len(self.frames)
        return 1 if n == 1 else 2 * n - 2

    def frame_number(self, counter: int) -> int:
        """The source frame shown at this counter value (ping-pong)."""
        n = len(self.frames)
        if n == 1:
            return 0
        pos = counter % (2 * n - 2)
        return pos if pos < n else 2 * n - 2 - pos

    def frame_at(self, counter: int) -> np.ndarray:
        return self.frames[self.frame_number(counter)]


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


def load_avatar(path: Path, width: int, height: int, max_frames: int = 600) -> Avatar:
    """Load an image (a still) or a video (up to max_frames frames) fitted to the output size."""
    if not path.is_file():
        raise AvatarError(f"avatar file not found: {path}")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise AvatarError(f"cannot read avatar image: {path}")
        frames = [image]
    else:
        capture = cv2.VideoCapture(str(path))
        frames = []
        try:
            while len(frames) < max_frames:
                ok, frame = capture.read()
                if not ok:
                    break
                frames.append(frame)
        finally:
            capture.release()
        if not frames:
            raise AvatarError(f"cannot read any frame from avatar video: {path}")
    fitted = tuple(fit_to_canvas(f, width, height) for f in frames)
    for f in fitted:
        f.setflags(write=False)  # shared by every tick; nobody may paint on them
    return Avatar(frames=fitted, source=path, source_digest=file_digest(path))


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
) -> tuple[Avatar, Avatar]:
    """The idle and the talking avatar, both fitted to the output size.

    When both name the same file, or files with the same bytes, the SAME object is returned
    twice: the compositor then keeps the shared body and blends only the mouth (no whole-frame
    cross-fade). The talking file is then loaded with the idle limit, as one avatar is.
    An AvatarError names `idle_setting` or `talking_setting`, the env names that chose the files.
    """
    try:
        idle_avatar = load_avatar(idle, width, height, max_frames=idle_max_frames)
    except AvatarError as error:
        raise error.with_setting(idle_setting) if idle_setting else error
    try:
        if not talking.is_file():
            raise AvatarError(f"avatar file not found: {talking}")
        if talking.resolve() == idle.resolve() or file_digest(talking) == idle_avatar.source_digest:
            return idle_avatar, idle_avatar
        return idle_avatar, load_avatar(talking, width, height, max_frames=talking_max_frames)
    except AvatarError as error:
        raise error.with_setting(talking_setting) if talking_setting else error
