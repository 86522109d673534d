"""Landmarks found before, kept on disk, so a restarted service does not look for the avatar's
face again: on a busy machine the search took 5-13 s of a restart (docs/performance.md,
"Recovery after a killed service"), during which the stream is on air but takes no messages.

One small file per (image content, upsample, predictor): `<key>.npy` with the 68 points, or
`<key>.noface` when dlib found no face. Written whole under a temporary name and renamed, so a
crash leaves no half file; a file that cannot be read is treated as absent (and replaced), a
folder that cannot be written costs only the saving.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from poc.paths import RUN_DIR

log = logging.getLogger(__name__)

CACHE_DIR = RUN_DIR / "landmarks"
_FORMAT = "v1"  # bump when what is stored changes


def file_key(digest: bytes, shape: tuple[int, ...], upsample: int, predictor_size: int) -> str:
    """The file name stem for one image's answer (the predictor's size stands for its version)."""
    return f"{digest.hex()}-{'x'.join(map(str, shape))}-u{upsample}-p{predictor_size}-{_FORMAT}"


def load(key: str, folder: Path | None = None) -> np.ndarray | bool | None:
    """The stored points, False for a stored "no face", None when nothing usable is stored."""
    folder = CACHE_DIR if folder is None else folder
    if (folder / f"{key}.noface").is_file():
        return False
    try:
        points = np.load(folder / f"{key}.npy", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if points.shape != (68, 2) or points.dtype != np.float32 or not np.isfinite(points).all():
        return None  # not ours, or damaged: found again and replaced
    return points


def store(key: str, points: np.ndarray | None, folder: Path | None = None) -> None:
    """Keep one answer (None: no face); never raises."""
    folder = CACHE_DIR if folder is None else folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".", suffix=".tmp", delete=False) as out:
            if points is not None:
                np.save(out, np.asarray(points, np.float32), allow_pickle=False)
        os.replace(out.name, folder / (f"{key}.npy" if points is not None else f"{key}.noface"))
    except OSError as error:
        log.debug("landmarks not kept on disk (%s): they will be found again next start", error)
