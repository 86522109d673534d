"""Draw the switch pictures in docs/idle.md from recordings of tests/e2e/test_switch_continuity.py.

    .venv/bin/pytest -m slow tests/e2e/test_switch_continuity.py --basetemp /tmp/switch-run
    .venv/bin/python scripts/switch_pictures.py /tmp/switch-run/<test dir> [LATE_DIR] [out_dir]

Each run folder holds the test's switch.mkv and service0.log. LATE_DIR, if given, is a run where
the face was late for a message's first frames (on a loaded machine); its worst switch is drawn
under the clean one.

switch-change.png: the change between consecutive frames over the whole run (head and shoulders,
8x8 blocks), speech and switch windows shaded, with the 99th percentiles it is judged by.
switch-frames.png: the mouth and chin, frame by frame, around the start of a message, and the
change from the frame before (x6).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import test_switch_continuity as measure  # noqa: E402
from support.stream import decode_audio, decode_video_gray, probe, speech_spans  # noqa: E402

FONT = cv2.FONT_HERSHEY_SIMPLEX
MOUTH_AND_CHIN = (504, 160, 176, 144)  # x, y, w, h in the 1280x720 picture


class Run:
    """One recording, measured the way the test measures it."""

    def __init__(self, folder: Path) -> None:
        path = folder / "switch.mkv"
        log = (folder / "service0.log").read_text()
        on_air = [int(f) for f in re.findall(r"switch-\d: on air at frame (\d+)", log)]
        facts = probe(path)
        audio, rate = decode_audio(path), facts.audio_rate
        self.pts = np.array(sorted(facts.video_pts))
        offset = np.flatnonzero(audio)[0] / rate - on_air[0] / measure.FPS
        heard = measure.messages_heard(audio, rate, [f / measure.FPS + offset for f in on_air])
        frame_at = lambda sample: int(np.argmin(np.abs(self.pts - (facts.audio_start + sample / rate))))  # noqa: E731
        self.starts = [frame_at(first) for first, _ in heard]
        self.ends = [frame_at(last) for _, last in heard]
        self.voice = [(frame_at(int(a * rate)), frame_at(int(b * rate))) for a, b in speech_spans(audio, rate)]
        moving = measure.block_means(path, measure.MOVING, measure.BLOCK).astype(np.float32)
        self.change = np.abs(np.diff(moving, axis=0)).mean(axis=(1, 2))
        self.into_key = measure.keyframes(path)[1:]
        self.windows = [np.arange(max(0, f - measure.SPARE), f + measure.BLEND_FRAMES + measure.SPARE)
                        for f in sorted(self.starts + self.ends)]  # fmt: skip
        at_switch = np.zeros(len(self.change), bool)
        for window in self.windows:
            at_switch[window] = True
        talking, idle = np.zeros(len(self.change), bool), np.ones(len(self.change), bool)
        for a, b in self.voice:
            talking[a:b] = True
        for a, b in zip(self.starts, self.ends):
            idle[a:b] = False
        ordinary = ~at_switch & ~self.into_key
        self.talking_p99 = float(np.percentile(self.change[talking & ordinary], 99))
        self.idle_p99 = float(np.percentile(self.change[idle & ordinary], 99))
        self.largest = [float(self.change[w[~self.into_key[w]]].max()) for w in self.windows]
        self.mouth = decode_video_gray(path, 1280, 720, box=MOUTH_AND_CHIN)


def text(img: np.ndarray, words: str, at: tuple[int, int], scale: float = 0.5, colour=(40, 40, 40)) -> None:
    cv2.putText(img, words, at, FONT, scale, colour, 1, cv2.LINE_AA)


def change_plot(run: Run, width: int = 1400, height: int = 380) -> np.ndarray:
    left, right, top, bottom = 60, 20, 30, 40
    img = np.full((height, width, 3), 255, np.uint8)
    n = len(run.change)
    top_value = max(1.0, float(run.change[~run.into_key].max()) * 1.1)
    x = lambda i: int(left + i / n * (width - left - right))  # noqa: E731
    y = lambda v: int(height - bottom - min(v, top_value) / top_value * (height - top - bottom))  # noqa: E731
    for a, b in run.voice:
        cv2.rectangle(img, (x(a), top), (x(b), height - bottom), (215, 245, 215), -1)
    for window in run.windows:
        cv2.rectangle(img, (x(window[0]), top), (x(window[-1] + 1), height - bottom), (160, 210, 255), -1)
    points = [(x(i), y(v)) for i, v in enumerate(run.change) if not run.into_key[i]]
    cv2.polylines(img, [np.array(points, np.int32)], False, (60, 60, 60), 1, cv2.LINE_AA)
    for i in np.flatnonzero(run.into_key):
        cv2.circle(img, (x(i), y(run.change[i])), 2, (170, 170, 170), -1, cv2.LINE_AA)
    for value, colour, name in [(run.talking_p99, (40, 40, 220), "talking p99"), (run.idle_p99, (200, 120, 40), "idle p99")]:
        for x0 in range(left, width - right, 12):
            cv2.line(img, (x0, y(value)), (min(x0 + 6, width - right), y(value)), colour, 1)
        text(img, f"{name} {value:.2f}", (width - right - 130, y(value) - 5), 0.45, colour)
    cv2.line(img, (left, height - bottom), (width - right, height - bottom), (0, 0, 0), 1)
    cv2.line(img, (left, top), (left, height - bottom), (0, 0, 0), 1)
    for v in np.arange(0, top_value + 1e-6, 0.25):
        text(img, f"{v:.2f}", (8, y(v) + 4), 0.4)
    for second in range(0, int(n / measure.FPS) + 1, 5):
        text(img, f"{second} s", (x(second * measure.FPS) - 10, height - bottom + 18), 0.4)
    text(img, "change between consecutive frames (grey levels, head and shoulders, 8x8 blocks); green: voice heard; "
         "orange: switch windows; grey dots: into a keyframe (left out)", (left, 18), 0.42)  # fmt: skip
    return img


def frames_row(run: Run, start: int, caption: str, scale: float = 1.25) -> np.ndarray:
    w, h = int(MOUTH_AND_CHIN[2] * scale), int(MOUTH_AND_CHIN[3] * scale)
    tiles, diffs = [], []
    for i in range(start - 1, start + 6):
        tile = cv2.cvtColor(cv2.resize(run.mouth[i], (w, h), interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2BGR)
        cv2.putText(tile, f"{i - start:+d}", (6, 20), FONT, 0.55, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(tile, f"{i - start:+d}", (6, 20), FONT, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
        diff = cv2.absdiff(run.mouth[i], run.mouth[i - 1])
        diff = cv2.applyColorMap(cv2.convertScaleAbs(cv2.resize(diff, (w, h)), alpha=6), cv2.COLORMAP_INFERNO)
        cv2.putText(diff, f"{run.change[i - 1]:.2f}", (6, 20), FONT, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
        diffs.append(diff)
    band = np.full((28, w * len(tiles), 3), 255, np.uint8)
    text(band, caption, (6, 19), 0.5)
    return np.vstack([band, np.hstack(tiles), np.hstack(diffs)])


def main() -> None:
    clean = Run(Path(sys.argv[1]))
    late = Run(Path(sys.argv[2])) if len(sys.argv) > 2 and sys.argv[2] != "-" else None
    out = Path(sys.argv[3]) if len(sys.argv) > 3 else ROOT / "docs" / "idle"
    out.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out / "switch-change.png"), change_plot(clean))
    rows = [frames_row(clean, clean.starts[0], "a message starts (frame +0 plays its first sound): the mouth "
                       "blends in over four frames")]  # fmt: skip
    if late is not None:
        worst = int(np.argmax(late.largest))
        start = sorted(late.starts + late.ends)[worst]
        rows.append(frames_row(late, start, "the face engine late for the first frames (a loaded machine): "
                               "the blend runs over the idle face and the mouth appears at once"))  # fmt: skip
    cv2.imwrite(str(out / "switch-frames.png"), np.vstack(rows))
    for name, run in [("clean", clean), ("late", late)]:
        if run is not None:
            print(name, "largest per switch", np.round(run.largest, 2).tolist(),
                  f"talking p99 {run.talking_p99:.2f} idle p99 {run.idle_p99:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
