"""A short video avatar made from the default portrait: the head and shoulders sway left, right
and left again, not symmetrically, so playing it backward (ping-pong) visibly reverses.

The sway is a rotation about a point below the chin (the neck), a 2-s wave with a second
harmonic (quick to one side, slow to the other) plus a slow bob and a 3.3-s drift that makes
no two moments quite identical, so a loop has to find its joint rather than be handed one.

    .venv/bin/python -m tests.support.sway_clip out.avi [seconds] [fps] [WxH]
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from poc.paths import DEFAULT_AVATAR


def sway_angle(t: float) -> float:
    """Degrees of lean at time t (seconds): positive leans to the viewer's left."""
    return 2.2 * np.sin(2 * np.pi * t / 2.0) + 0.9 * np.sin(4 * np.pi * t / 2.0 + 0.9) + 0.4 * np.sin(2 * np.pi * t / 3.3)


def sway_frames(seconds: float = 4.0, fps: int = 30, size: tuple[int, int] = (512, 512)) -> list[np.ndarray]:
    """The clip's frames (uint8 BGR, `size` = (w, h)), starting mid-sway (moving fast)."""
    image = cv2.imread(str(DEFAULT_AVATAR), cv2.IMREAD_COLOR)
    h, w = image.shape[:2]
    pivot = (w * 0.5, h * 0.92)  # the base of the neck
    frames = []
    for k in range(round(seconds * fps)):
        t = k / fps + 1.9  # mid-sway, where the lean changes fastest
        matrix = cv2.getRotationMatrix2D(pivot, sway_angle(t), 1.0)
        matrix[1, 2] += 2.0 * np.sin(2 * np.pi * t / 3.7)  # a slow bob, out of step with the sway
        moved = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frames.append(cv2.resize(moved, size, interpolation=cv2.INTER_AREA) if size != (w, h) else moved)
    return frames


def write_sway_clip(path: Path, seconds: float = 4.0, fps: int = 30, size: tuple[int, int] = (512, 512)) -> Path:
    """Write the clip as Motion-JPEG (high quality) and return its path."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 95)
    try:
        for frame in sway_frames(seconds, fps, size):
            writer.write(frame)
    finally:
        writer.release()
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1])
    secs = float(sys.argv[2]) if len(sys.argv) > 2 else 4.0
    rate = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    wh = tuple(int(v) for v in sys.argv[4].split("x")) if len(sys.argv) > 4 else (512, 512)
    print(write_sway_clip(out, secs, rate, wh))  # type: ignore[arg-type]
