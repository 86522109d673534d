"""Landmarks are looked for from several worker threads at once (at start-up the face engine and
the living idle both do it): that must neither crash the process nor change the answer."""

from __future__ import annotations

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
    import threading
    import cv2, numpy as np, skimage.data
    from poc.face.landmarks import NoFaceFound, detect_landmarks

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


def test_an_image_seen_before_is_answered_from_memory_with_its_own_copy():
    import cv2
    import skimage.data

    from poc.face import landmarks

    face = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    first = landmarks.detect_landmarks(face)
    first += 1000  # a caller shifting its copy in place must not change the remembered answer
    again = landmarks.detect_landmarks(face.copy())
    assert np.array_equal(again + 1000, first)
    grey = np.full((120, 120, 3), 90, np.uint8)
    for _ in range(2):  # no face is remembered too, and still raised each time
        with pytest.raises(landmarks.NoFaceFound):
            landmarks.detect_landmarks(grey)
