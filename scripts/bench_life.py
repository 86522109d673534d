"""How long blinks and breath (face/life) take per frame: `.venv/bin/python scripts/bench_life.py`.

Renders a simulated stretch of idle frames of the avatar (default assets/avatar.png at 1280x720)
through Life.apply and prints per-frame times (median, 95th percentile, best) for blinks and
motion together and for each alone, plus the parts of a moving frame. First, talking frames
(the warp engine's mouth box, or a MuseTalk patch, pasted on each, as the compositor's mouth
blend does) drawn through Life.apply_patched and, for comparison, the full path (paste, then
draw the whole picture).
On a shared or busy machine the wall times include waiting for a core; the thread's CPU time
per frame does not. `--talking-only` skips the idle figures.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from poc.face.avatar import load_avatar
from poc.face.base import FacePatch
from poc.face.landmarks import detect_landmarks
from poc.face.life import Life, LifeOptions
from poc.face.mouth import MouthPose, MouthRig
from poc.face.musetalk.geometry import blend_face, frame_geometry


def timed(fn, frames: range) -> tuple[list[float], float]:
    """Wall time of each call (ms), and the CPU time of this thread per call (ms): on a busy
    machine the wall times include waiting for a core, the CPU time does not."""
    out = []
    cpu_start = time.thread_time()
    for k in frames:
        start = time.perf_counter()
        fn(k)
        out.append((time.perf_counter() - start) * 1e3)
    return out, (time.thread_time() - cpu_start) * 1e3 / len(frames)


def report(name: str, measured: tuple[list[float], float]) -> None:
    ms, cpu = measured
    ms_sorted = sorted(ms)
    p95 = ms_sorted[int(0.95 * (len(ms) - 1))]
    print(f"{name:<28} median {statistics.median(ms):6.3f} ms   p95 {p95:6.3f} ms   best {ms_sorted[0]:6.3f} ms"
          f"   CPU {cpu:6.3f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--avatar", type=Path, default=Path(__file__).resolve().parents[1] / "assets" / "avatar.png")
    parser.add_argument("--resolution", default="1280x720")
    parser.add_argument("--seconds", type=float, default=20.0, help="simulated stream time (30 fps)")
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads (the tick runs on one)")
    parser.add_argument("--talking-only", action="store_true", help="only the talking frames")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    width, height = (int(v) for v in args.resolution.split("x"))
    avatar = load_avatar(args.avatar, width, height)
    landmarks = detect_landmarks(avatar.frames[0])[None]
    picture = avatar.frames[0]
    frames = range(60, 60 + int(args.seconds * 30))  # after the 1 s fade-in: every frame moves
    both = Life.for_avatar(avatar, 30, LifeOptions(), landmarks=landmarks)
    assert both.field is not None
    x0, y0, x1, y1 = both.field.roi
    print(f"{args.avatar.name} at {width}x{height}, motion region {x1 - x0}x{y1 - y0} px, "
          f"{len(frames)} frames, {args.threads} OpenCV thread(s)")  # fmt: skip
    for _ in range(60):  # warm caches and OpenCV's buffers
        both.apply(_, picture)
    talking(avatar, landmarks, frames)
    if args.talking_only:
        return
    report("blinks + motion", timed(lambda k: both.apply(k, picture), frames))
    motion = Life.for_avatar(avatar, 30, LifeOptions(blinks=False), landmarks=landmarks)
    report("motion only", timed(lambda k: motion.apply(k, picture), frames))
    blinks = Life.for_avatar(avatar, 30, LifeOptions(motion=0.0), landmarks=landmarks)
    closing = [k for k in frames if blinks.closure(k) > 0]
    report(f"blinks only ({len(closing)} frames)", timed(lambda k: blinks.apply(k, picture), closing))
    # the parts of a moving frame
    field, signals = both.field, both.signals
    assert signals is not None
    report("  motion signals", timed(lambda k: signals.at(k / 30), frames))
    report("  coarse field -> map", timed(lambda k: field.update(signals.at(k / 30)), frames))
    out, mapping = np.empty_like(picture), field.update(signals.at(1.0))
    report("  remap of the region", timed(lambda k: cv2.remap(picture[y0:y1, x0:x1], mapping, None, cv2.INTER_LINEAR,
                                                              dst=out[y0:y1, x0:x1]), frames))  # fmt: skip
    report("  copy of a whole frame", timed(lambda k: picture.copy(), frames))


def talking(avatar, landmarks: np.ndarray, frames: range) -> None:
    """Talking frames: the warp engine's mouth box (the jaw dropped) and a MuseTalk patch (a
    generated face, noise here, through the feathered lower-face alpha) pasted on the body,
    life drawn after it, as the compositor's mouth blend does once the mouth is in."""
    picture = avatar.frames[0]
    rig = MouthRig(picture, landmarks[0])
    x, y, pixels = blend_face(picture, np.random.default_rng(1).integers(0, 256, (256, 256, 3), np.uint8),
                              frame_geometry(landmarks[0], picture.shape[1], picture.shape[0]))  # fmt: skip
    mouths = {
        "warp": FacePatch(rig.x, rig.y, rig.render(picture, MouthPose(open=0.9))),
        "musetalk": FacePatch(x, y, pixels),
    }
    for engine, mouth in mouths.items():
        print(f"talking, {engine} engine: mouth box {mouth.width}x{mouth.height} px at ({mouth.x}, {mouth.y})")
        for name, options in (("blinks + motion", LifeOptions()), ("motion only", LifeOptions(blinks=False))):
            life = Life.for_avatar(avatar, 30, options, landmarks=landmarks)
            for k in range(60):
                life.apply_patched(k, picture, mouth)
            report(f"  {name}", timed(lambda k: life.apply_patched(k, picture, mouth), frames))
            report("    (full path)", timed(lambda k: life.apply(k, mouth.pasted_on(picture)), frames))
        report("  paste alone (no life)", timed(lambda k: mouth.pasted_on(picture), frames))


if __name__ == "__main__":
    main()
