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
from poc.face.loop import FADE_RANGE, build_cycle, describe, fade_frames, find_loop, min_segment, plan_cycle
from poc.face.loop_cycle import longest_cycle
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


def joints_at(avatar: Avatar) -> list[list[int]]:
    """Per joint: the cycle positions whose picture is its cross-fade, then the first frame after."""
    plan = avatar.cycle.plan
    out, position = [], 0
    for start, stop in plan.segments:
        position += stop - start
        out.append([p % avatar.cycle_length for p in range(position - plan.fade, position + 1)])
    return out


def joint_positions(avatar: Avatar) -> list[int]:
    return [p for joint in joints_at(avatar) for p in joint]


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
    half = (plan.fade + 1) // 2
    for joint, positions in zip(plan.joints, joints_at(avatar)):
        faded = positions[:-1]
        for p in faded:
            shown = detect_landmarks(avatar.frame_at(p))
            number = avatar.frame_number(p)
            drawn_on = detect_landmarks(avatar.frames[number])
            width = float(np.linalg.norm(shown[16] - shown[0]))
            assert np.linalg.norm(shown - drawn_on, axis=1).mean() <= 0.03 * width, p
        numbers = [avatar.frame_number(p) for p in faded]
        # The first half draws on the outgoing frames, the rest on the incoming ones.
        after, to = joint.after, joint.to
        assert numbers[: half - 1] == list(range(after - plan.fade + 1, after - plan.fade + half))
        assert numbers[-1] == to - 1


def test_the_warp_mouth_lands_on_the_cross_faded_body(avatar: Avatar) -> None:
    """No seam at a joint: the talking patch's border is the blended picture's own pixels."""
    engine = WarpEngine(avatar, FPS, RATE)
    try:
        t = np.arange(RATE // FPS) / RATE
        loud = np.round(8000 * np.sin(2 * np.pi * 180.0 * t)).astype(np.int16)
        fade = joints_at(avatar)[0][:-1]
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


# --- Loops of several segments, on a clip whose alike moments are known by construction -------
#
# A camera glides 1 px a frame over a blurred noise texture. Where its path runs over the same
# stretch twice, the two moments look alike (the very same pictures); elsewhere no two do. The
# path (x to the right, frames by number):
#   0..11    along the shared stretch S, from S(0) to S(11)
#   12..79   a loop above S, from S(12) back to S(-10)
#   80..101  along S again, S(-10)..S(11): frames 90..101 are frames 0..11
#   102..179 a loop below S, from S(12) back to S(-10)        (the clip with two alike stretches)
#   180..191 along S a third time, S(-10)..S(1): frames 180..191 are frames 80..91
# so the alike pairs are (10, 100) and (90, 190) and their neighbours, as in docs/idle-loop.md.
# With one alike stretch the clip leaves S at frame 102 for good, in a straight line.


def _arc(p0: np.ndarray, p1: np.ndarray, steps: int, side: int) -> np.ndarray:
    """`steps` points 1 px apart along a circular arc from p0 towards p1 (p1 excluded), bulging
    to `side` (-1 up, +1 down)."""
    chord = float(np.linalg.norm(p1 - p0))
    lo, hi = np.pi, 2 * np.pi - 1e-9  # the major arc `steps` px long: bisect its angle
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 2 * steps * np.sin(mid / 2) / mid > chord else (lo, mid)
    angle = (lo + hi) / 2
    radius = steps / angle
    along = (p1 - p0) / chord
    normal = side * np.array([-along[1], along[0]])
    centre = (p0 + p1) / 2 + normal * radius * np.cos(angle / 2)
    start = np.arctan2(p0[1] - centre[1], p0[0] - centre[0])
    out = p0 - centre
    turning = -1 if out[0] * normal[1] - out[1] * normal[0] > 0 else 1
    a = start + turning * angle * np.arange(steps) / steps
    return centre + radius * np.stack([np.cos(a), np.sin(a)], axis=1)


def glide_path(stretches: int) -> np.ndarray:
    """(N, 2) camera positions of the clip described above; stretches: 0, 1 or 2 alike pairs."""
    on_s = lambda u: np.array([130.0 + u, 130.0])  # noqa: E731
    path = [on_s(u) for u in range(12)]
    if stretches == 0:
        return np.array(path + [on_s(12) + k * np.array([0.6, 0.8]) for k in range(180)])
    path += list(_arc(on_s(12), on_s(-10), 68, -1)) + [on_s(t - 90) for t in range(80, 102)]
    if stretches == 1:
        return np.array(path + [on_s(12) + k * np.array([0.6, 0.8]) for k in range(90)])
    return np.array(path + list(_arc(on_s(12), on_s(-10), 78, +1)) + [on_s(t - 190) for t in range(180, 192)])


def glide_frames(path: np.ndarray) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (300, 300)).astype(np.float32), (0, 0), 4.0)
    texture = cv2.normalize(texture, None, 0, 255, cv2.NORM_MINMAX)
    crops = [cv2.getRectSubPix(texture, (64, 48), (float(x), float(y))) for x, y in path]
    return [cv2.cvtColor(np.clip(c, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR) for c in crops]


def one_joint_plan(frames: list[np.ndarray], monkeypatch: pytest.MonkeyPatch):
    """The plan the same search makes when it may use one joint only (the search before cycles)."""
    import poc.face.loop as loop

    with monkeypatch.context() as m:
        m.setattr(loop, "longest_cycle", lambda s, e, c, shortest, gain=0: longest_cycle(s, e, c, shortest, 10**9))
        return find_loop(frames, FPS)


def assert_forward_with_jumps_at_alike_pairs(cycle, path: np.ndarray) -> None:
    """Every step of the cycle's frame numbers is +1 except one jump per joint (mid-fade), and
    each jump shows a place less than one cross-fade's motion (1 px a frame) from the place
    forward play would have shown: the joint's two moments look alike."""
    numbers = list(cycle.numbers) + [cycle.numbers[0]]
    jumps = [(a, b) for a, b in zip(numbers, numbers[1:]) if b != a + 1]
    assert len(jumps) == len(cycle.plan.joints), jumps
    for (a, b), joint in zip(jumps, cycle.plan.joints):
        assert b - (a + 1) == joint.to - (joint.after + 1)  # the jump is this joint's
        assert np.linalg.norm(path[a + 1] - path[b]) < cycle.plan.fade, (a, b)
    assert set(cycle.numbers) == set(range(min(cycle.numbers), max(cycle.numbers) + 1))


def test_overlapping_alike_pairs_make_a_loop_of_several_forward_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    path = glide_path(stretches=2)
    assert np.allclose(np.linalg.norm(np.diff(path, axis=0), axis=1), 1.0, atol=0.01)  # 1 px a frame
    frames = glide_frames(path)
    plan = find_loop(frames, FPS)
    cycle = build_cycle(frames, plan)
    assert len(plan.segments) >= 2, describe(plan)
    assert all(stop - start > plan.fade for start, stop in plan.segments)  # room for each fade
    assert_forward_with_jumps_at_alike_pairs(cycle, path)
    # More distinct frames than one segment can play, by more than a second.
    (start, stop), *_ = one_joint_plan(frames, monkeypatch).segments
    assert len(set(cycle.numbers)) >= stop - start + min_segment(FPS), (describe(plan), start, stop)


def test_one_alike_stretch_keeps_one_forward_segment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two joints from the same alike stretch would chain for a few frames more: one is kept."""
    path = glide_path(stretches=1)
    frames = glide_frames(path)
    plan = find_loop(frames, FPS)
    assert len(plan.segments) == 1, describe(plan)
    assert plan == one_joint_plan(frames, monkeypatch)
    cycle = build_cycle(frames, plan)
    (start, stop), fade = plan.segments[0], plan.fade
    assert list(cycle.numbers[: stop - start - fade]) == list(range(start, stop - fade))
    assert_forward_with_jumps_at_alike_pairs(cycle, path)


def test_a_clip_that_never_comes_back_ping_pongs() -> None:
    frames = glide_frames(glide_path(stretches=0))
    plan = find_loop(frames, FPS)
    assert plan.ping_pong and "alike" in plan.reason, describe(plan)
    assert build_cycle(frames, plan).numbers == tuple(range(len(frames))) + tuple(range(len(frames) - 2, 0, -1))


def test_the_cycle_search_chains_the_doc_example_and_prefers_one_joint() -> None:
    # Alike pairs (10, 100) and (90, 190): 10..189 then 90..99, 180 frames where either gives 100.
    order = longest_cycle([90, 10], [190, 100], [0.5, 0.5], shortest=10)
    assert order == [1, 0]  # landing lowest first: (10, 100), whose segment runs to 190
    # Segments under 10 frames are too short for their cross-fade: then one joint only, and a
    # cheaper way back that would play 90..94 only is not taken.
    assert longest_cycle([92, 10], [192, 100], [0.5, 0.5], shortest=10) in ([0], [1])
    assert longest_cycle([90, 10, 10], [190, 100, 95], [0.5, 0.9, 0.1], shortest=10) == [1, 0]
    # Two joints 3 frames apart gain 4 frames: not worth a second cross-fade at least_gain 30.
    assert longest_cycle([12, 9], [107, 103], [0.2, 0.1], shortest=10, least_gain=30) == [0]
    assert len(longest_cycle([12, 9], [107, 103], [0.2, 0.1], shortest=10)) == 2
    # Equal spans: the fewest joints, then the least change (10..299 then 150..199, rather than
    # 150..179, 100..139 by two joints that change less).
    assert longest_cycle([10, 10, 90], [190, 100, 190], [0.9, 0.1, 0.1], shortest=10) == [0]
    assert longest_cycle([10, 10, 100, 150], [200, 140, 180, 300], [0.9, 0.0, 0.0, 0.5], shortest=10) == [0, 3]
    assert longest_cycle([10, 10, 150], [200, 170, 300], [0.9, 0.1, 0.5], shortest=10) == [1, 2]
    assert longest_cycle([], [], [], shortest=10) is None


def test_a_plan_cached_by_the_one_joint_search_is_searched_again(tmp_path: Path) -> None:
    """Format 1 plans (one segment, before the cycle search) are not reused: the clip may loop longer."""
    frames = glide_frames(glide_path(stretches=2))
    first = plan_cycle(frames, FPS, "e" * 64, "glide", tmp_path)
    (cached,) = tmp_path.glob("*-loop.json")
    body = json.loads(cached.read_text())
    body.update(format=1, segments=[[90, 190]], joints=[[189, 90, 0.5]])
    cached.write_text(json.dumps(body))
    again = plan_cycle(frames, FPS, "e" * 64, "glide", tmp_path)
    assert again.plan == first.plan and len(again.plan.segments) >= 2
    # Joints that do not chain the segments do not fit the clip either.
    body = json.loads(cached.read_text())
    body["joints"] = body["joints"][::-1]
    cached.write_text(json.dumps(body))
    assert plan_cycle(frames, FPS, "e" * 64, "glide", tmp_path).plan == first.plan
