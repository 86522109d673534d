"""Life on talking frames drawn through the mouth box only (`Life.apply_patched`): the picture is
exactly the one the full path draws (paste the mouth on the body, then blink and move the whole
picture), on the default avatar with the warp engine's mouth and a MuseTalk-shaped feathered
patch, through the 1 s fade-in and blinks, with mouth boxes across the motion region's edge,
near and over the eyes, on a body that changes every frame, and in the compositor's mouth blend.

Equality is exact (max difference 0, not "within rounding"): outside the redrawn box the
living body frame was resampled from the same pixels with the same map, and inside it the same
remap runs on the same source values with the map shifted by whole pixels, which is exact in
float32 at these magnitudes."""

from __future__ import annotations


import numpy as np
import pytest

from support.portrait import avatar, landmarks  # noqa: F401 - fixtures
from poc.face.avatar import Avatar
from poc.face.base import FacePatch
from poc.face.life import Life, LifeOptions
from poc.face.mouth import MouthPose, MouthRig
from poc.face.musetalk.geometry import blend_face, frame_geometry
from poc.jobs import Job
from poc.media.compositor import Compositor
from poc.media.timeline import Schedule, Segment
from poc.metrics import Metrics
from poc.statechart import StreamChart

FPS, RATE = 30, 44100
SPF = RATE // FPS
WEIGHTS = (0.25, 0.75, 1.0)  # mid mouth blend and talking


def life_of(avatar: Avatar, landmarks: np.ndarray, seed: int = 2) -> Life:
    return Life.for_avatar(avatar, FPS, LifeOptions(seed=seed), landmarks=landmarks)


def frames_to_check(life: Life) -> list[int]:
    """The fade-in (motion growing from nothing, then the first held poses) and every frame of
    the first two blinks (closing, shut, opening) with the frames around them."""
    blinking = [k for k in range(20 * FPS) if life.closure(k) > 0]
    assert blinking and blinking[-1] > 2 * FPS  # one blink at least is past the fade-in
    around = {k + d for k in blinking[:30] for d in (-1, 0, 1)}
    return sorted(set(range(0, FPS + 6)) | around)


def noise(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def warp_mouth(avatar: Avatar, landmarks: np.ndarray) -> FacePatch:
    """The CPU warp engine's patch: its mouth box with the jaw dropped."""
    rig = MouthRig(avatar.frames[0], landmarks[0])
    return FacePatch(rig.x, rig.y, rig.render(avatar.frames[0], MouthPose(open=0.9, width=0.3)))


def musetalk_mouth(avatar: Avatar, landmarks: np.ndarray) -> FacePatch:
    """A MuseTalk patch: a generated face (noise here) blended through the feathered lower-face
    alpha onto the body, so its edge fades into the body's own pixels."""
    height, width = avatar.frames[0].shape[:2]
    x, y, pixels = blend_face(avatar.frames[0], noise((256, 256, 3), 1), frame_geometry(landmarks[0], width, height))
    return FacePatch(x, y, pixels)


def assert_same_as_full_path(life: Life, reference: Life, frames: list[int], body, patch: FacePatch) -> None:
    for k in frames:
        for weight in WEIGHTS:
            picture = body(k)
            got = life.apply_patched(k, picture, patch, weight)
            expected = reference.apply(k, patch.pasted_on(picture, weight))
            diff = np.abs(got.astype(np.int16) - expected).max()
            assert diff == 0, f"frame {k}, weight {weight}: {diff} levels off"


@pytest.mark.slow  # seconds of CPU: the full suite runs it, the fast lane does not
@pytest.mark.parametrize("engine", [warp_mouth, musetalk_mouth])
def test_a_talking_frame_is_the_full_path_picture_through_fade_in_and_blinks(avatar, landmarks, engine) -> None:
    life, reference = life_of(avatar, landmarks), life_of(avatar, landmarks)
    patch = engine(avatar, landmarks)
    picture = avatar.frames[0]
    assert_same_as_full_path(life, reference, frames_to_check(life), lambda k: picture, patch)
    # the mouth really is on it, and it moves with the head: not the body's pixels, not pasted still
    k = 3 * FPS
    out = life.apply_patched(k, picture, patch)
    box = np.s_[patch.y : patch.y + patch.height, patch.x : patch.x + patch.width]
    assert not np.array_equal(out[box], life.apply(k, picture)[box])
    assert not np.array_equal(out[box], patch.pixels)


EDGE_CASES = ("across the bottom edge", "across the left edge", "across a corner", "outside the region",
              "under the eyes, its unchanged edge over them", "over an eye")  # fmt: skip


def edge_patches(life: Life, picture: np.ndarray) -> dict[str, FacePatch]:
    x0, y0, x1, y1 = life.field.roi if life.field else (0, 0, 0, 0)
    eyes = life._eyes[0]
    eye_bottom = max(e.y + e.height for e in eyes)
    left, right = min(e.x for e in eyes), max(e.x + e.width for e in eyes)
    # a box over the lower halves of the eyes whose pixels there are the body's own (as at a
    # MuseTalk patch's feathered top), new only below them: the closing lids sample through it
    feathered = picture[eye_bottom - 25 : eye_bottom + 40, left:right].copy()
    feathered[27:] = noise(feathered[27:].shape, 8)
    return {
        "across the bottom edge": FacePatch(x0 + 150, y1 - 20, noise((50, 120, 3), 2)),
        "across the left edge": FacePatch(x0 - 30, y1 - 150, noise((60, 70, 3), 3)),
        "across a corner": FacePatch(x1 - 40, y1 - 30, noise((60, 70, 3), 4)),
        "outside the region": FacePatch(x1 + 10, y1 + 10, noise((40, 40, 3), 5)),
        "under the eyes, its unchanged edge over them": FacePatch(left, eye_bottom - 25, feathered),
        "over an eye": FacePatch(left + 10, eye_bottom - 12, noise((40, 60, 3), 7)),
    }


@pytest.mark.slow  # seconds of CPU: the full suite runs it, the fast lane does not
@pytest.mark.parametrize("where", EDGE_CASES)
def test_mouth_boxes_at_the_region_edge_and_by_the_eyes(avatar, landmarks, where: str) -> None:
    life, reference = life_of(avatar, landmarks), life_of(avatar, landmarks)
    x0, y0, x1, y1 = life.field.roi  # type: ignore[union-attr]
    assert (x1 - x0, y1 - y0) == (375, 416) and y1 < 720  # the default: a region with an edge to cross
    picture = avatar.frames[0]
    patch = edge_patches(life, picture)[where]
    assert_same_as_full_path(life, reference, frames_to_check(life), lambda k: picture, patch)


@pytest.mark.parametrize("where", ["under the eyes, its unchanged edge over them", "over an eye"])
def test_blinks_without_motion_by_the_eyes(avatar, landmarks, where: str) -> None:
    options = LifeOptions(seed=2, motion=0.0)
    life, reference = (Life.for_avatar(avatar, FPS, options, landmarks=landmarks) for _ in range(2))
    picture = avatar.frames[0]
    patch = edge_patches(life, picture)[where]
    blinking = [k for k in range(10 * FPS) if life.closure(k) > 0]
    assert_same_as_full_path(life, reference, blinking + [blinking[-1] + 1], lambda k: picture, patch)


@pytest.mark.slow  # seconds of CPU: the full suite runs it, the fast lane does not
def test_a_body_that_changes_every_frame_is_drawn_once_and_nothing_on_air_is_overwritten(avatar, landmarks) -> None:
    """A video avatar's body is a new picture each frame: it is drawn for that frame alone (and
    written into), never over an output already handed out, idle or talking."""
    life, reference = life_of(avatar, landmarks), life_of(avatar, landmarks)
    patch = warp_mouth(avatar, landmarks)
    bodies = [np.roll(avatar.frames[0], shift, axis=1) for shift in range(0, 8, 2)]
    frames = frames_to_check(life)
    body = lambda k: bodies[k % len(bodies)]
    given = []
    for k in frames:
        given.append(life.apply(k, body(k)))  # the idle frame, then talking on another body
        given.append(life.apply_patched(k, body(k + 1), patch))
    expected = []
    for k in frames:
        expected.append(reference.apply(k, body(k)).copy())
        expected.append(reference.apply(k, patch.pasted_on(body(k + 1))))
    assert all(np.array_equal(a, b) for a, b in zip(given, expected))
    assert all(b.tobytes() == np.roll(avatar.frames[0], 2 * i, axis=1).tobytes() for i, b in enumerate(bodies))


@pytest.mark.parametrize("offset", [0, 1])  # the first talking frame on the idle frame's pose, or the next
def test_the_compositor_mouth_blend_is_the_full_path_picture(avatar, landmarks, offset: int) -> None:
    """Idle, the mouth blending in over four frames, talking through a blink, blending out: every
    picture on air is the full path's, and no picture handed out earlier is written to later."""
    life, reference = life_of(avatar, landmarks), life_of(avatar, landmarks)
    mouth = warp_mouth(avatar, landmarks)
    blink = next(k for k in range(3 * FPS, 20 * FPS) if life.closure(k) > 0)
    start, length = blink - 12 + offset, 36
    segment = Segment(job=Job(message=None, id="talk"), start=start)
    for i in range(length):
        segment.audio.append(np.full(SPF, 1000 + i, dtype=np.int16))
        segment.patches[start + i] = mouth
    segment.complete = True
    schedule = Schedule()
    schedule.append(segment)
    compositor = Compositor(avatar, StreamChart(has_pending=lambda: False), schedule, RATE, FPS, Metrics(), life=life)
    shown = []
    for k in range(start - 4, start + length + 8):
        picture, _ = compositor.render(k)
        shown.append((k, compositor.talking_weight, picture))
    assert {w for _, w, _ in shown} >= {0.0, 0.25, 0.5, 0.75, 1.0}
    idle = avatar.frames[0]
    for k, weight, picture in shown:
        expected = reference.apply(k, idle if weight == 0 else mouth.pasted_on(idle, weight))
        assert np.array_equal(picture, expected), f"frame {k} at weight {weight}"
