"""Make the pictures of docs/idle.md: `.venv/bin/python scripts/life_pictures.py`.

docs/idle/blink.png     one blink of the default avatar, frame by frame (eyes enlarged 3x)
docs/idle/breath.png    the head at both ends of a breath (a fixed line at the chin), and their difference
                        (amplified): only the region around the person moves, the surround never
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from poc.face.avatar import load_avatar
from poc.face.landmarks import detect_landmarks
from poc.face.life import Life, LifeOptions

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "idle"
FPS = 30


def label(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    avatar = load_avatar(ROOT / "assets" / "avatar.png", 1280, 720)
    picture = avatar.frames[0]
    landmarks = detect_landmarks(picture)[None]
    blinks = Life.for_avatar(avatar, FPS, LifeOptions(motion=0.0), landmarks=landmarks)
    first = next(k for k in range(600) if blinks.closure(k) > 0) - 1
    (x0, y0), (x1, y1) = landmarks[0, 36:48].min(axis=0).astype(int), landmarks[0, 36:48].max(axis=0).astype(int)
    box = (x0 - 25, y0 - 30, x1 + 25, y1 + 25)
    tiles = []
    for k in range(first, first + 12):
        crop = blinks.apply(k, picture)[box[1] : box[3], box[0] : box[2]]
        big = cv2.resize(crop, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
        tiles.append(label(big, f"frame {k - first}  closure {blinks.closure(k):.2f}"))
    rows = [np.hstack(tiles[i : i + 4]) for i in range(0, 12, 4)]
    cv2.imwrite(str(OUT / "blink.png"), np.vstack(rows))

    motion = Life.for_avatar(avatar, FPS, LifeOptions(blinks=False), landmarks=landmarks)
    assert motion.signals is not None and motion.field is not None
    frames = range(2 * FPS, 8 * FPS)
    lifts = [motion.signals.at(k / FPS).lift for k in frames]
    low, high = frames[int(np.argmin(lifts))], frames[int(np.argmax(lifts))]
    a, b = motion.apply(low, picture), motion.apply(high, picture)
    diff = cv2.absdiff(a, b)
    diff = cv2.applyColorMap(cv2.convertScaleAbs(cv2.cvtColor(diff, cv2.COLOR_BGR2GRAY), alpha=6), cv2.COLORMAP_INFERNO)
    rx0, ry0, rx1, ry1 = motion.field.roi
    cv2.rectangle(diff, (rx0, ry0), (rx1 - 1, ry1 - 1), (255, 255, 255), 2)
    half = lambda img: cv2.resize(img, (640, 360), interpolation=cv2.INTER_AREA)
    # the face at both ends of the breath, enlarged 2x, a fixed line at the chin to measure by
    chin, cx = int(landmarks[0, 8, 1]), int(landmarks[0, :, 0].mean())

    def head(img: np.ndarray) -> np.ndarray:
        crop = img[chin - 130 : chin + 50, cx - 160 : cx + 160]
        big = cv2.resize(crop, (640, 360), interpolation=cv2.INTER_CUBIC)
        cv2.line(big, (0, 260), (640, 260), (0, 255, 0), 1)
        return big

    top = np.hstack([label(head(a), f"breath out (frame {low})"), label(head(b), f"breath in (frame {high})")])
    bottom = np.hstack([label(half(diff), "difference x6, motion region outlined"),
                        label(half(cv2.absdiff(a, picture) * 6), "frame vs the photo x6")])  # fmt: skip
    cv2.imwrite(str(OUT / "breath.png"), np.vstack([top, bottom]))


if __name__ == "__main__":
    main()
