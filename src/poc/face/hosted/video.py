"""A vendor's video as stream frames: decoded, resampled in time to our fps, fitted like the avatar.

Vendors render at their own rate (D-ID and Hedra 25 fps, Tavus 25-30) and size; the stream has
one fps and one size. Output frame k is shown at k/fps, so it is the source frame on screen at
that moment: source index floor(k * src_fps / fps), the last frame whose time has come. The
count is round(n_src * fps / src_fps), the video's duration at our rate (25 -> 30 fps repeats
every fifth frame, 30 -> 25 drops every sixth). Frames are fitted with the avatar's own
`CanvasFitter` (its blurred surround made once per video), so a vendor's square portrait fills a 16:9 stream exactly as the local avatar
does, and a repeated source frame is fitted once and shared (same array object).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from poc.face.avatar import CanvasFitter
from poc.face.hosted.base import HostedFaceError


def decode_video(path: Path, width: int, height: int, fps: int) -> list[np.ndarray]:
    """Every frame of `path` at `fps`, as BGR uint8 height x width x 3 arrays (read-only).

    Raises HostedFaceError(kind "bad_video") when the file does not decode to any frame."""
    return list(iter_video(path, width, height, fps))


def iter_video(path: Path, width: int, height: int, fps: int) -> Iterator[np.ndarray]:
    """decode_video one frame at a time, so a long video need not sit in memory whole.

    Raises HostedFaceError("bad_video") before the first frame if the file does not decode."""
    if width <= 0 or height <= 0 or fps <= 0:
        raise ValueError(f"bad output geometry {width}x{height}@{fps}")
    capture = _open(path)
    try:
        source_fps = capture.get(cv2.CAP_PROP_FPS)
        if not math.isfinite(source_fps) or source_fps <= 0:
            raise HostedFaceError(f"video has no frame rate: {path.name}", "bad_video")
        ok, first = capture.read()
        if not ok or first is None:
            raise HostedFaceError(f"video has no decodable frame: {path.name}", "bad_video")
        yield from _resample(capture, first, source_fps, width, height, fps)
    finally:
        capture.release()


def video_seconds(path: Path) -> float | None:
    """How long the video lasts by its container's frame count and rate; None when it does
    not say (a stream without an index) or the file does not open."""
    capture = cv2.VideoCapture(str(path))
    try:
        frames, rate = capture.get(cv2.CAP_PROP_FRAME_COUNT), capture.get(cv2.CAP_PROP_FPS)
    finally:
        capture.release()
    if not (math.isfinite(frames) and math.isfinite(rate)) or frames <= 0 or rate <= 0:
        return None
    return float(frames / rate)


def _open(path: Path) -> cv2.VideoCapture:
    if not path.is_file() or path.stat().st_size == 0:
        raise HostedFaceError(f"video file is missing or empty: {path.name}", "bad_video")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise HostedFaceError(f"video does not decode: {path.name}", "bad_video")
    return capture


def _resample(
    capture: cv2.VideoCapture, first: np.ndarray, source_fps: float, width: int, height: int, fps: int
) -> Iterator[np.ndarray]:
    ratio = source_fps / fps
    fitter = CanvasFitter(width, height)  # one blurred surround for the whole video
    current_index, current = 0, _fit(fitter, first)
    # The next source frame is grabbed ahead (to know whether the video goes on) and converted
    # and fitted only if it is shown: a 60 fps vendor video on a 30 fps stream skips half its
    # frames, and converting 4K frames only to drop them ran slower than real time.
    has_next = capture.grab()
    k = 0
    while True:
        wanted = math.floor(k * ratio + 1e-9)  # the source frame on screen at k / fps
        while wanted > current_index:
            if not has_next:
                return
            current_index += 1
            if current_index == wanted:
                ok, raw = capture.retrieve()
                if ok and raw is not None:  # a frame that does not convert: the last one holds
                    current = _fit(fitter, raw)
            has_next = capture.grab()
        if not has_next and not _within(k, current_index, ratio):
            return
        yield current
        k += 1


def _within(k: int, last_index: int, ratio: float) -> bool:
    """Whether output frame k still falls in the video once its last source frame is current:
    the output count is round((last_index + 1) / ratio)."""
    return k < round((last_index + 1) / ratio)


def _fit(fitter: CanvasFitter, frame: np.ndarray) -> np.ndarray:
    fitted = fitter.fit(frame)
    fitted.setflags(write=False)  # may be shared by repeated output frames
    return fitted
