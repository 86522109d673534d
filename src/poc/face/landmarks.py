"""68-point face landmarks, offline: dlib's HOG detector and the predictor that the
`face-recognition-models` package ships (iBUG 300-W scheme, 0-based: jaw 0-16, nose 27-35,
outer lips 48-59, inner lips 60-67).

The detector also fires on face-like patches (on the astronaut photo, a mission badge), so we
keep the detection with the best score rather than the largest box.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np


class NoFaceFound(ValueError):
    """No face in the image: the avatar cannot be animated."""


# dlib's detector keeps its image pyramid inside the object and its Python binding lets go of
# the GIL while it runs, so two threads detecting with the one shared instance corrupt its memory
# (dlib issues #340, #1149). At start-up the face engine and the living idle both look for the
# avatar's face in worker threads at once: that crashed the service with SIGSEGV about once in
# fifty starts. Detection runs a handful of times per avatar, so one lock costs nothing a viewer sees.
_DLIB_LOCK = threading.Lock()
# Landmarks already found, by image content (see detect_landmarks); a video avatar's frames are
# looked at one by one when its loop is planned, so this holds a few hundred small arrays.
MAX_REMEMBERED = 1024
# shape_predictor_68_face_landmarks.dat as face-recognition-models 0.3 ships it
PUBLISHED_PREDICTOR_BYTES = 99_693_937
_FOUND: OrderedDict[tuple[bytes, tuple[int, ...], int], np.ndarray | NoFaceFound] = OrderedDict()


@functools.cache
def _models():  # loading the predictor costs ~0.3 s; do it once per process (under _DLIB_LOCK)
    import dlib

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(predictor_path()))
    return detector, predictor


def predictor_path() -> Path:
    """The 68-point predictor inside `face-recognition-models`, found without importing the
    package: its __init__ imports pkg_resources, which current setuptools no longer ships."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise NoFaceFound("the face-recognition-models package is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / "models" / "shape_predictor_68_face_landmarks.dat"


def detect_landmarks(image_bgr: np.ndarray, upsample: int = 1) -> np.ndarray:
    """Return the 68 landmarks (float32, shape (68, 2), x then y) of the best face.

    Remembered per image for the life of the process: the face engine and the living idle look
    at the same avatar frame, and stations sharing an avatar (or a station rebuilt after a
    failure) would otherwise pay for detection again (0.3 s on a free core, seconds on a busy one).
    Kept on disk too (face/landmark_cache.py), so a restart does not search again."""
    digest = hashlib.blake2b(np.ascontiguousarray(image_bgr).data, digest_size=16).digest()
    key = (digest, image_bgr.shape, upsample)
    with _DLIB_LOCK:
        found = _FOUND.get(key)
        if found is None:
            found = _from_disk_or_dlib(digest, image_bgr, upsample)
            _FOUND[key] = found
            if len(_FOUND) > MAX_REMEMBERED:
                _FOUND.popitem(last=False)
        else:
            _FOUND.move_to_end(key)
    if isinstance(found, NoFaceFound):
        raise NoFaceFound(str(found))
    return found.copy()  # callers may shift it in place


def remember_landmarks(image_bgr: np.ndarray, points: np.ndarray, upsample: int = 1) -> None:
    """Take these 68 points as dlib's answer for this image in this process, as if it had found
    them: a machine without dlib's predictor (the GPU machine: it does not travel) can then
    prepare an avatar whose landmarks were found elsewhere and carried as a .npy."""
    points = np.asarray(points, np.float32)
    if points.shape != (68, 2):
        raise ValueError(f"expected 68 (x, y) landmarks, got shape {points.shape}")
    digest = hashlib.blake2b(np.ascontiguousarray(image_bgr).data, digest_size=16).digest()
    with _DLIB_LOCK:
        _FOUND[(digest, image_bgr.shape, upsample)] = points.copy()
        _FOUND.move_to_end((digest, image_bgr.shape, upsample))


def _from_disk_or_dlib(digest: bytes, image_bgr: np.ndarray, upsample: int) -> np.ndarray | NoFaceFound:
    """(caller holds _DLIB_LOCK)"""
    from poc.face import landmark_cache

    key = landmark_cache.file_key(digest, image_bgr.shape, upsample, predictor_bytes())
    stored = landmark_cache.load(key)
    if stored is False:
        return NoFaceFound("no face found in the avatar image")
    if stored is not None:
        return stored
    found = _detect(image_bgr, upsample)
    landmark_cache.store(key, None if isinstance(found, NoFaceFound) else found)
    return found


def predictor_bytes() -> int:
    """The predictor's size, which stands for its version in the disk cache's keys. Without the
    package (a GPU machine with no network, say) it is the published file's size, so answers
    found elsewhere with that file and carried in the cache folder are still found; looking for
    a new face there fails as before."""
    try:
        return predictor_path().stat().st_size
    except (NoFaceFound, OSError):
        return PUBLISHED_PREDICTOR_BYTES


def _detect(image_bgr: np.ndarray, upsample: int) -> np.ndarray | NoFaceFound:
    """dlib's answer for one image (caller holds _DLIB_LOCK); no face is an answer too."""
    import dlib

    rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
    detector, predictor = _models()
    boxes, scores, _ = detector.run(rgb, upsample, 0.0)
    if not boxes:
        boxes, scores, _ = detector.run(rgb, upsample + 1, -0.5)
    if not boxes:
        return NoFaceFound("no face found in the avatar image")
    best = max(range(len(boxes)), key=lambda i: scores[i])
    box: dlib.rectangle = boxes[best]
    shape = predictor(rgb, box)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
