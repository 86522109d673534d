"""Landmarks are looked for from several worker threads at once (at start-up the face engine and
the living idle both do it): that must neither crash the process nor change the answer."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

# In a child process: a crash inside dlib is a failed test here, not a dead test run.
HAMMER = textwrap.dedent(
    """
    import sys, tempfile, threading
    from pathlib import Path
    import cv2, numpy as np, skimage.data
    from poc.face import landmark_cache
    from poc.face.landmarks import NoFaceFound, detect_landmarks

    landmark_cache.CACHE_DIR = Path(tempfile.mkdtemp())  # nothing found before: every image goes to dlib

    face = cv2.resize(cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR), (256, 256))
    alone = detect_landmarks(face)
    differing, faceless = [], []

    def work(thread, rounds):
        for i in range(rounds):
            # a grey of its own each time: answers are remembered per image, these must reach dlib
            grey = np.full((160, 160, 3), 60 + 10 * thread + i, np.uint8)
            try:
                if not np.array_equal(detect_landmarks(face if i % 2 else grey), alone):
                    differing.append(i)
            except NoFaceFound:
                faceless.append(i)

    threads = [threading.Thread(target=work, args=(t, 4)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(len(differing), len(faceless))
    """
)


@pytest.mark.slow  # seconds of CPU: the full suite runs it, the fast lane does not
def test_landmarks_from_four_threads_at_once_match_those_found_alone():
    result = subprocess.run(
        [sys.executable, "-c", HAMMER],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    differing, faceless = map(int, result.stdout.split())
    assert differing == 0
    assert faceless == 8  # every grey image, and only those, has no face


def test_an_image_seen_before_is_answered_from_memory_with_its_own_copy(monkeypatch, tmp_path):
    import cv2
    import skimage.data

    from poc.face import landmark_cache, landmarks

    monkeypatch.setattr(landmark_cache, "CACHE_DIR", tmp_path)

    face = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    first = landmarks.detect_landmarks(face)
    first += 1000  # a caller shifting its copy in place must not change the remembered answer
    again = landmarks.detect_landmarks(face.copy())
    assert np.array_equal(again + 1000, first)
    grey = np.full((120, 120, 3), 90, np.uint8)
    for _ in range(2):  # no face is remembered too, and still raised each time
        with pytest.raises(landmarks.NoFaceFound):
            landmarks.detect_landmarks(grey)


@pytest.mark.slow  # seconds of CPU: the full suite runs it, the fast lane does not
def test_a_restarted_process_reads_the_answer_from_disk_and_a_damaged_file_is_found_again(tmp_path):
    """What one process found, the next one reads (no dlib search); a damaged file is searched
    again and replaced; "no face" is kept too."""
    script = textwrap.dedent(
        f"""
        import json, time
        from pathlib import Path
        import cv2, numpy as np, skimage.data
        from poc.face import landmark_cache, landmarks
        landmark_cache.CACHE_DIR = Path({str(tmp_path)!r})
        face = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
        searched = []
        real = landmarks._detect
        landmarks._detect = lambda *a: searched.append(1) or real(*a)  # counts dlib searches
        points = landmarks.detect_landmarks(face)
        try:
            landmarks.detect_landmarks(np.full((100, 100, 3), 77, np.uint8))
        except landmarks.NoFaceFound:
            pass
        print(json.dumps({{"searched": len(searched), "points": points.tolist()}}))
        """
    )

    def run() -> dict:
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                                env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(result.stdout)

    first, second = run(), run()
    assert first["searched"] == 2 and second["searched"] == 0
    assert second["points"] == first["points"]
    (stored,) = tmp_path.glob("*.npy")
    stored.write_bytes(b"not numpy")
    third = run()
    assert third["searched"] == 1 and third["points"] == first["points"]
    assert np.load(stored).shape == (68, 2)


def test_the_disk_cache_keys_by_the_published_predictor_file():
    """A machine without dlib's predictor (the GPU machine) keys its cache as if it had the
    published file: this pins that size to the file actually installed."""
    from poc.face import landmarks

    assert landmarks.predictor_path().stat().st_size == landmarks.PUBLISHED_PREDICTOR_BYTES
    assert landmarks.predictor_bytes() == landmarks.PUBLISHED_PREDICTOR_BYTES


@pytest.mark.slow  # seconds of CPU: the full suite runs it, the fast lane does not
def test_answers_carried_to_a_machine_without_dlib_are_found_there(tmp_path):
    """The cache folder filled where dlib and its predictor exist answers, unchanged, in a
    process where neither can be imported; a face it has never seen fails clearly there."""
    script = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        import cv2, numpy as np, skimage.data
        if sys.argv[1] == "without":  # neither dlib nor the predictor's package can be found
            sys.modules.update(dict.fromkeys(("dlib", "_dlib_pybind11", "face_recognition_models")))
        from poc.face import landmark_cache, landmarks
        landmark_cache.CACHE_DIR = Path({str(tmp_path)!r})
        face = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
        out = {{"points": landmarks.detect_landmarks(face).tolist()}}
        if sys.argv[1] == "without":  # a face the first process never looked at
            try:
                landmarks.detect_landmarks(face[::2, ::2].copy())
                out["unseen"] = "found"
            except Exception as e:
                out["unseen"] = type(e).__name__
        print(json.dumps(out))
        """
    )

    def run(mode: str) -> dict:
        result = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, timeout=120,
                                env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(result.stdout)

    with_dlib = run("with")
    without = run("without")
    assert without["points"] == with_dlib["points"]
    assert without["unseen"] in ("NoFaceFound", "ModuleNotFoundError")


def test_remembered_landmarks_stand_in_for_dlib() -> None:
    """What a GPU machine without dlib's predictor does with the avatar's points carried as a .npy."""
    from poc.face import landmarks

    # a noise image has no face: dlib would say so, so these points can only be the remembered ones
    image = np.random.default_rng(7).integers(0, 256, (90, 160, 3), dtype=np.uint8)
    points = np.random.default_rng(8).uniform(0, 90, (68, 2)).astype(np.float32)
    landmarks.remember_landmarks(image, points)
    assert np.array_equal(landmarks.detect_landmarks(image), points)
    with pytest.raises(ValueError, match="68"):
        landmarks.remember_landmarks(image, points[:10])
