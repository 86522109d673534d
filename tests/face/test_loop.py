"""Video avatars loop forward without bouncing (poc.face.loop through poc.face.avatar).

The clip is the default portrait swaying left, right and left again (tests/support/sway_clip.py),
loaded as the service loads it; every check goes through `Avatar.frame_at` / `frame_number`,
which is what the compositor and the face engines use.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from poc.face.avatar import Avatar, load_avatar
from poc.face.base import SpeechSlot
from poc.face.landmarks import detect_landmarks
from poc.face.loop import FADE_RANGE, fade_frames
from poc.face.warp import WarpEngine
from poc.paths import DEFAULT_AVATAR
from support.sway_clip import write_sway_clip

FPS = 30
SIZE = (640, 360)
RATE = 16000


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sway_clip(tmp_path_factory.mktemp("sway") / "sway.avi", seconds=4.0, fps=FPS)


@pytest.fixture(scope="module")
def avatar(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Avatar:
    return load_avatar(clip, *SIZE, fps=FPS, loop_cache=tmp_path_factory.mktemp("cache"))


def change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute grey-level difference between two pictures."""
    return float(np.abs(cv2.cvtColor(a, cv2.COLOR_BGR2GRAY).astype(np.int16)
                        - cv2.cvtColor(b, cv2.COLOR_BGR2GRAY).astype(np.int16)).mean())  # fmt: skip


def joint_positions(avatar: Avatar) -> list[int]:
    """Cycle positions whose picture is a cross-fade, plus the first frame after each fade."""
    plan = avatar.cycle.plan
    out, position = [], 0
    for start, stop in plan.segments:
        position += stop - start
        out += list(range(position - plan.fade, position + 1))
    return [p % avatar.cycle_length for p in out]


@pytest.mark.slow  # seconds of CPU: the full suite runs it, the fast lane does not
def test_the_sway_clip_plays_forward_only_segments(avatar: Avatar) -> None:
    plan = avatar.cycle.plan
    assert plan is not None and not plan.ping_pong, plan
    numbers = [avatar.frame_number(k) for k in range(2 * avatar.cycle_length)]
    steps = [b - a for a, b in zip(numbers, numbers[1:])]
    jumps = [s for s in steps if s != 1]
    # One jump back per joint per cycle (mid-fade); everything else is the clip playing forward,
    # including the wrap from one cycle into the next.
    assert len(jumps) == 2 * len(plan.joints) and all(s < 0 for s in jumps), jumps
    assert avatar.cycle_length >= FPS  # at least a second before anything repeats


def test_every_joint_changes_no_more_than_ordinary_motion(avatar: Avatar) -> None:
    """Frame-to-frame change at every joint <= the 99th percentile of the clip's own change."""
    ordinary = [change(a, b) for a, b in zip(avatar.frames, avatar.frames[1:])]
    limit = float(np.percentile(ordinary, 99))
    length = avatar.cycle_length
    at_joints = []
    for cycle in range(2):
        for p in joint_positions(avatar):
            k = cycle * length + p
            at_joints.append(change(avatar.frame_at(k - 1), avatar.frame_at(k)))
    assert len(at_joints) == 2 * (avatar.cycle.plan.fade + 1) * len(avatar.cycle.plan.joints)
    assert max(at_joints) <= limit, (max(at_joints), limit)


def test_the_cross_fade_lasts_200_to_400_ms() -> None:
    for fps in (10, 15, 24, 25, 30, 50, 60):
        seconds = fade_frames(fps) / fps
        assert FADE_RANGE[0] <= seconds <= FADE_RANGE[1], fps


def test_a_cross_faded_frame_draws_on_the_nearer_source_frame(avatar: Avatar) -> None:
    """The engines' landmarks (of frame_number's frame) sit on the face actually shown."""
    plan = avatar.cycle.plan
    for p in joint_positions(avatar)[:-1]:  # the cross-faded ones
        shown = detect_landmarks(avatar.frame_at(p))
        number = avatar.frame_number(p)
        drawn_on = detect_landmarks(avatar.frames[number])
        width = float(np.linalg.norm(shown[16] - shown[0]))
        assert np.linalg.norm(shown - drawn_on, axis=1).mean() <= 0.03 * width, p
    numbers = [avatar.frame_number(p) for p in joint_positions(avatar)[:-1]]
    half = (plan.fade + 1) // 2
    # The first half draws on the outgoing frames, the rest on the incoming ones.
    after, to = plan.joints[0].after, plan.joints[0].to
    assert numbers[: half - 1] == list(range(after - plan.fade + 1, after - plan.fade + half))
    assert numbers[-1] == to - 1


def test_the_warp_mouth_lands_on_the_cross_faded_body(avatar: Avatar) -> None:
    """No seam at a joint: the talking patch's border is the blended picture's own pixels."""
    engine = WarpEngine(avatar, FPS, RATE)
    try:
        t = np.arange(RATE // FPS) / RATE
        loud = np.round(8000 * np.sin(2 * np.pi * 180.0 * t)).astype(np.int16)
        fade = joint_positions(avatar)[:-1]
        first = fade[0] - 4  # a few slots before, so the mouth is open across the fade
        slots = [SpeechSlot(first + k, loud, "a") for k in range(len(fade) + 8)]
        utterance = engine.start_utterance()
        frames = utterance.feed(slots) + utterance.finish()
        checked = 0
        for frame in frames:
            if frame.patch is None or frame.index not in fade:
                continue
            p = frame.patch
            body = avatar.frame_at(frame.index)[p.y : p.y + p.height, p.x : p.x + p.width]
            for edge in (np.s_[0, :], np.s_[-1, :], np.s_[:, 0], np.s_[:, -1]):
                assert np.abs(p.pixels[edge].astype(int) - body[edge].astype(int)).max() <= 1
            assert not np.array_equal(p.pixels, body)  # and the mouth did move
            checked += 1
        assert checked >= len(fade) - 2
    finally:
        engine.close()


@pytest.mark.slow  # seconds of CPU: the full suite runs it, the fast lane does not
def test_the_plan_is_cached_by_the_clip_digest(clip: Path, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="poc.face.loop")
    first = load_avatar(clip, *SIZE, fps=FPS, loop_cache=tmp_path)
    files = list(tmp_path.glob("*-loop.json"))
    assert len(files) == 1 and first.source_digest[:16] in files[0].name
    caplog.clear()
    again = load_avatar(clip, *SIZE, fps=FPS, loop_cache=tmp_path)
    assert "loaded in" in caplog.text
    assert again.cycle.plan == first.cycle.plan
    # Another frame rate needs other fades: searched afresh, cached beside the first.
    other = load_avatar(clip, *SIZE, fps=25, loop_cache=tmp_path)
    assert other.cycle.plan.fade == fade_frames(25)
    assert len(list(tmp_path.glob("*-loop.json"))) == 2


@pytest.mark.slow  # seconds of CPU: the full suite runs it, the fast lane does not
def test_a_broken_cache_is_searched_again(clip: Path, tmp_path: Path, caplog) -> None:
    first = load_avatar(clip, *SIZE, fps=FPS, loop_cache=tmp_path)
    (cached,) = tmp_path.glob("*-loop.json")
    body = json.loads(cached.read_text())
    body["segments"] = [[0, 10_000]]  # does not fit the clip
    cached.write_text(json.dumps(body))
    with caplog.at_level(logging.WARNING, logger="poc.face.loop"):
        again = load_avatar(clip, *SIZE, fps=FPS, loop_cache=tmp_path)
    assert "does not fit the clip" in caplog.text
    assert again.cycle.plan == first.cycle.plan
    cached.write_text("{not json")
    again = load_avatar(clip, *SIZE, fps=FPS, loop_cache=tmp_path)
    assert again.cycle.plan == first.cycle.plan


def test_a_clip_with_no_good_joint_ping_pongs_and_says_so_once(tmp_path: Path, caplog) -> None:
    """A steady pan that never comes back: no two moments alike, so forward then backward."""
    image = cv2.imread(str(DEFAULT_AVATAR))
    path = tmp_path / "pan.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (384, 384))
    for k in range(60):
        writer.write(np.ascontiguousarray(image[64:448, 2 * k : 2 * k + 384]))
    writer.release()
    with caplog.at_level(logging.INFO, logger="poc.face.loop"):
        avatar = load_avatar(path, *SIZE, fps=FPS, loop_cache=tmp_path)
    lines = [r for r in caplog.records if "ping-pong" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert avatar.cycle.plan.ping_pong
    numbers = [avatar.frame_number(k) for k in range(avatar.cycle_length)]
    assert numbers == list(range(60)) + list(range(58, 0, -1))


def test_a_still_and_a_short_clip_keep_their_simple_cycles(tmp_path: Path, caplog) -> None:
    still = load_avatar(DEFAULT_AVATAR, *SIZE, fps=FPS, loop_cache=tmp_path)
    assert still.cycle_length == 1 and still.frame_at(7) is still.frames[0]
    image = cv2.imread(str(DEFAULT_AVATAR))
    path = tmp_path / "short.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (512, 512))
    for k in range(20):  # 0.67 s: shorter than one loop segment
        writer.write(np.ascontiguousarray(np.roll(image, k, axis=1)))
    writer.release()
    with caplog.at_level(logging.INFO, logger="poc.face.loop"):
        short = load_avatar(path, *SIZE, fps=FPS, loop_cache=tmp_path)
    assert [short.frame_number(k) for k in range(short.cycle_length)] == list(range(20)) + list(range(18, 0, -1))
    (line,) = [r.getMessage() for r in caplog.records]
    assert "too few" in line and "ping-pong" in line
    assert not list(tmp_path.glob("*.json"))  # nothing searched, nothing cached
    assert math.isclose(fade_frames(FPS) / FPS, 0.3)


@pytest.mark.slow  # the command imports the MuseTalk stack (torch): ~20 s here
def test_avatar_prepare_plans_and_caches_the_loop_first(clip: Path, tmp_path: Path, capsys) -> None:
    """The loop is planned before any MuseTalk work, so it is cached even without the weights."""
    import argparse

    from poc.face.musetalk.commands import add_avatar_parser

    parser = argparse.ArgumentParser(prog="poc")
    add_avatar_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["avatar", "prepare", str(clip), "--size", "640x360", "--fps", "30",
                              "--models-dir", str(tmp_path / "no-models"), "--cache-dir", str(tmp_path)])  # fmt: skip
    assert args.func(args) == 2  # no MuseTalk weights here
    out = capsys.readouterr().out
    assert out.startswith("loop: frames ") and "joint" in out
    assert len(list(tmp_path.glob("*-640x360-30fps-loop.json"))) == 1


@pytest.mark.slow
def test_600_frames_at_720p_are_planned_quickly_and_cached(tmp_path: Path) -> None:
    """Start-up cost of a 20-s clip at 1280x720: the search, then the cached plan."""
    import time

    from poc.face.avatar import CanvasFitter
    from poc.face.landmarks import detect_landmarks as warm
    from poc.face.loop import plan_cycle
    from support.sway_clip import sway_frames

    fitter = CanvasFitter(1280, 720)
    frames = [fitter.fit(f) for f in sway_frames(seconds=20.0, fps=FPS)]
    assert len(frames) == 600
    warm(frames[0])  # dlib's model loads once per process (~0.3 s): not the loop's cost
    started = time.perf_counter()
    cycle = plan_cycle(frames, FPS, "f" * 64, "sway20", tmp_path)
    searched = time.perf_counter() - started
    started = time.perf_counter()
    again = plan_cycle(frames, FPS, "f" * 64, "sway20", tmp_path)
    cached = time.perf_counter() - started
    assert not cycle.plan.ping_pong and again.plan == cycle.plan
    assert searched < 6.0, searched  # ~1.4 s here on 2 shared cores
    assert cached < 1.0, cached  # ~0.05 s: the plan is a few numbers, the fades a few blends
