"""Draw the pictures in docs/idle-loop.md from the sway test clip (tests/support/sway_clip.py).

    .venv/bin/python scripts/loop_pictures.py [out_dir]   (default docs/img)

loop-joint.png: the face around the loop's joint, a hard cut (top) against the cross-fade (bottom).
loop-motion.png: the head's sideways position over 8 s of stream, ping-pong against the loop,
and the loop's frame-to-frame change against the clip's 99th percentile.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from poc.face.avatar import Avatar, load_avatar  # noqa: E402
from poc.face.landmarks import detect_landmarks  # noqa: E402
from poc.face.loop import ping_pong_cycle  # noqa: E402
from support.sway_clip import write_sway_clip  # noqa: E402

FPS, SIZE = 30, (640, 360)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def face_box(avatar: Avatar) -> tuple[int, int, int, int]:
    lm = detect_landmarks(avatar.frames[0])
    (x0, y0), (x1, y1) = lm.min(axis=0), lm.max(axis=0)
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * 0.95
    return int(cx - half), int(cy - half), int(cx + half), int(cy + half)


def tile(picture: np.ndarray, box: tuple[int, int, int, int], label: str, size: int = 100) -> np.ndarray:
    x0, y0, x1, y1 = box
    out = cv2.resize(picture[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA)
    out = cv2.copyMakeBorder(out, 0, 18, 1, 1, cv2.BORDER_CONSTANT, value=(255, 255, 255))
    cv2.putText(out, label, (3, size + 13), FONT, 0.36, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def joint_picture(avatar: Avatar) -> np.ndarray:
    plan = avatar.cycle.plan
    (start, stop), fade = plan.segments[0], plan.fade
    box = face_box(avatar)
    first = stop - start - fade - 2  # cycle position two frames before the fade begins
    positions = range(first, first + fade + 4)
    fades = []
    for p in positions:
        k = p % avatar.cycle_length
        t = p - (stop - start - fade)
        if 0 <= t < fade:
            w = (t + 1) / (fade + 1)
            label = f"{stop - fade + t}+{start - fade + t} {w:.1f}"
        else:
            label = f"frame {avatar.frame_number(k)}"
        fades.append(tile(avatar.frame_at(k), box, label))
    # The same moments with a hard cut: the segment runs to its end, then jumps to its start.
    cuts = []
    for p in positions:
        src = start + p if p < stop - start else start + p - (stop - start)
        cuts.append(tile(avatar.frames[src], box, f"frame {src}"))
    width = sum(t.shape[1] for t in fades)
    head = np.full((26, width, 3), 255, np.uint8)
    cv2.putText(head, "hard cut: the head jumps between two frames", (6, 18), FONT, 0.5, (0, 0, 160), 1, cv2.LINE_AA)
    mid = head.copy()
    mid[:] = 255
    cv2.putText(mid, f"loop: {fade}-frame cross-fade ({1000 * fade / FPS:.0f} ms), both streams moving forward",
                (6, 18), FONT, 0.5, (0, 110, 0), 1, cv2.LINE_AA)  # fmt: skip
    note = head.copy()
    note[:] = 255
    cv2.putText(note, "below each row: change from the previous picture (|difference| x 8)", (6, 18), FONT, 0.5,
                (0, 0, 0), 1, cv2.LINE_AA)  # fmt: skip
    return np.vstack([head, np.hstack(cuts), differences(cuts), mid, np.hstack(fades), differences(fades), note])


def differences(tiles: list[np.ndarray]) -> np.ndarray:
    """Per tile, 8x the absolute difference from the tile before (the first: black)."""
    out = [np.zeros_like(tiles[0])]
    for a, b in zip(tiles, tiles[1:]):
        d = np.clip(np.abs(b.astype(np.int16) - a.astype(np.int16)) * 8, 0, 255).astype(np.uint8)
        d[-18:] = 255  # not the labels
        out.append(d)
    return np.hstack(out)


def head_x(pictures: list[np.ndarray], reference: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Sideways shift of the face (px) against `reference`, by phase correlation."""
    x0, y0, x1, y1 = box
    ref = np.float32(cv2.cvtColor(reference[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY))
    grey = [np.float32(cv2.cvtColor(p[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)) for p in pictures]
    window = cv2.createHanningWindow(ref.shape[::-1], cv2.CV_32F)
    return np.array([cv2.phaseCorrelate(ref, g, window)[0][0] for g in grey])


def plot(canvas: np.ndarray, area: tuple[int, int, int, int], series: list[tuple[np.ndarray, tuple]], lo: float,
         hi: float, title: str, lines: tuple[tuple[float, tuple, str], ...] = ()) -> None:  # fmt: skip
    x0, y0, x1, y1 = area
    cv2.rectangle(canvas, (x0, y0), (x1, y1), (180, 180, 180), 1)
    cv2.putText(canvas, title, (x0, y0 - 8), FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    n = max(len(s) for s, _ in series)

    def pt(k: float, v: float) -> tuple[int, int]:
        return int(x0 + (x1 - x0) * k / (n - 1)), int(y1 - (y1 - y0) * (v - lo) / (hi - lo))

    for seconds in range(0, int(n / FPS) + 1):
        x, _ = pt(seconds * FPS, lo)
        cv2.line(canvas, (x, y1), (x, y1 + 4), (0, 0, 0), 1)
        cv2.putText(canvas, f"{seconds}s", (x - 8, y1 + 18), FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for value, colour, label in lines:
        cv2.line(canvas, pt(0, value), pt(n - 1, value), colour, 1, cv2.LINE_AA)
        cv2.putText(canvas, label, (x1 - 150, pt(0, value)[1] - 4), FONT, 0.4, colour, 1, cv2.LINE_AA)
    for values, colour in series:
        points = np.array([pt(k, v) for k, v in enumerate(values)], np.int32)
        cv2.polylines(canvas, [points], False, colour, 2, cv2.LINE_AA)


def motion_picture(avatar: Avatar) -> np.ndarray:
    box = face_box(avatar)
    count = 8 * FPS
    pong = ping_pong_cycle(avatar.frames)
    looped = [avatar.frame_at(k) for k in range(count)]
    bounced = [pong.pictures[k % len(pong.pictures)] for k in range(count)]
    canvas = np.full((560, 960, 3), 255, np.uint8)
    xl, xp = head_x(looped, avatar.frames[0], box), head_x(bounced, avatar.frames[0], box)
    lo, hi = min(xl.min(), xp.min()) - 2, max(xl.max(), xp.max()) + 2
    plot(canvas, (40, 40, 940, 250), [(xp, (0, 0, 200)), (xl, (0, 140, 0))], lo, hi,
         "head position (px sideways), 8 s of stream: red ping-pong (turns back at the clip's ends), green loop")  # fmt: skip
    for k in range(0, count, len(avatar.frames) - 1):  # where ping-pong turns round: mirror images either side
        x = int(40 + 900 * k / (count - 1))
        for y in range(40, 250, 12):
            cv2.line(canvas, (x, y), (x, y + 6), (0, 0, 200), 1)
        cv2.putText(canvas, "turn", (x + 3, 262 - 220), FONT, 0.4, (0, 0, 200), 1, cv2.LINE_AA)
    change = [float(np.abs(np.int16(cv2.cvtColor(a, cv2.COLOR_BGR2GRAY)) - cv2.cvtColor(b, cv2.COLOR_BGR2GRAY)).mean())
              for a, b in zip(looped, looped[1:])]  # fmt: skip
    ordinary = [float(np.abs(np.int16(cv2.cvtColor(a, cv2.COLOR_BGR2GRAY)) - cv2.cvtColor(b, cv2.COLOR_BGR2GRAY)).mean())
                for a, b in zip(avatar.frames, avatar.frames[1:])]  # fmt: skip
    p99 = float(np.percentile(ordinary, 99))
    plot(canvas, (40, 320, 940, 520), [(np.array(change), (0, 140, 0))], 0, p99 * 1.4,
         "loop: frame-to-frame change (mean |grey diff|); joints marked below",
         ((p99, (0, 0, 200), f"clip's 99th pct {p99:.2f}"),))  # fmt: skip
    plan = avatar.cycle.plan
    length = avatar.cycle_length
    for k in range(0, count, length):
        for p in range(length - plan.fade, length + 1):
            x = int(40 + 900 * (k + p - 1) / (count - 2))
            cv2.line(canvas, (x, 524), (x, 532), (0, 140, 0), 2)
    return canvas


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "img"
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_sway_clip(Path(tmp) / "sway.avi", seconds=4.0, fps=FPS)
        avatar = load_avatar(clip, *SIZE, fps=FPS, loop_cache=None)
    cv2.imwrite(str(out / "loop-joint.png"), joint_picture(avatar), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    cv2.imwrite(str(out / "loop-motion.png"), motion_picture(avatar))
    print(out / "loop-joint.png", out / "loop-motion.png")


if __name__ == "__main__":
    main()
