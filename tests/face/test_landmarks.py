"""Landmarks are looked for from several worker threads at once (at start-up the face engine and
the living idle both do it): that must neither crash the process nor change the answer."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# In a child process: a crash inside dlib is a failed test here, not a dead test run.
HAMMER = textwrap.dedent(
    """
    import threading
    import cv2, numpy as np, skimage.data
    from poc.face.landmarks import NoFaceFound, detect_landmarks

    face = cv2.resize(cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR), (256, 256))
    grey = np.full((160, 160, 3), 128, np.uint8)
    alone = detect_landmarks(face)
    differing, faceless = [], []

    def work(rounds):
        for i in range(rounds):
            try:
                if not np.array_equal(detect_landmarks(face if i % 2 else grey), alone):
                    differing.append(i)
            except NoFaceFound:
                faceless.append(i)

    threads = [threading.Thread(target=work, args=(4,)) for _ in range(4)]
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
