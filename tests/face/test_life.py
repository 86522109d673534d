"""Life on the avatar: seeded blinks with human timing, eyes that really close on the default
avatar, a breathing head that moves while the blurred surround stays put, the off switches,
determinism, and the compositor still putting exactly one frame and its samples on air per tick."""

from __future__ import annotations


import cv2
import numpy as np
import pytest

from support.portrait import avatar, landmarks  # noqa: F401 - fixtures
from poc.face.avatar import Avatar, load_avatar
from poc.face.base import FacePatch
from poc.face.life import Life, LifeOptions, content_rect
from poc.face.life.blink import CLOSING_S, MAX_CLOSED_S, MAX_INTERVAL_S, MIN_CLOSED_S, MIN_INTERVAL_S, BlinkSchedule
from poc.jobs import Job
from poc.media.compositor import Compositor
from poc.media.timeline import Schedule, Segment
from poc.metrics import Metrics
from poc.statechart import StreamChart

FPS, RATE = 30, 44100
SPF = RATE // FPS


def life_of(avatar: Avatar, landmarks: np.ndarray, **options) -> Life:
    return Life.for_avatar(avatar, FPS, LifeOptions(**options), landmarks=landmarks)


def eye_box(landmarks: np.ndarray) -> tuple[int, int, int, int]:
    eyes = landmarks[0, 36:48]
    (x0, y0), (x1, y1) = eyes.min(axis=0), eyes.max(axis=0)
    return int(x0) - 2, int(y0) - 2, int(x1) + 3, int(y1) + 3


def peak_frames(life: Life, seconds: float) -> list[int]:
    """Frames at which the eyes are fully closed."""
    return [k for k in range(int(seconds * FPS)) if life.closure(k) == 1.0]


# -- the schedule -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_a_minute_of_blinks_has_human_timing(seed: int) -> None:
    events = BlinkSchedule(seed).events(60.0)
    blinks = [b for e in events for b in e.blinks]
    assert 12 <= len(blinks) <= 24
    starts = [e.start for e in events]
    gaps = np.diff(starts)
    assert gaps.min() >= MIN_INTERVAL_S and gaps.max() <= MAX_INTERVAL_S
    assert all(MIN_CLOSED_S <= b.closed <= MAX_CLOSED_S for b in blinks)
    # the closure signal agrees with the events: sampled at 1 kHz, closed 100-150 ms each time
    schedule = BlinkSchedule(seed)
    closed = np.array([schedule.closure(t / 1000) == 1.0 for t in range(61_000)])  # all of the last
    edges = np.flatnonzero(np.diff(closed.astype(np.int8)))
    shut, opened = edges[0::2] / 1000, edges[1::2] / 1000
    assert np.allclose(shut[: len(blinks)], [b.start + CLOSING_S for b in blinks], atol=0.002)
    runs = (opened - shut[: len(opened)])[: len(blinks)]
    assert runs.min() >= 0.099 and runs.max() <= 0.151


def test_some_blinks_are_double_and_the_rate_holds_over_half_an_hour() -> None:
    events = BlinkSchedule(7).events(1800.0)
    doubles = [e for e in events if len(e.blinks) == 2]
    assert 0.05 < len(doubles) / len(events) < 0.25
    for e in doubles:  # the eye opens between the two, then closes again soon
        first, second = e.blinks
        assert 0.05 < second.start - first.end < 0.3
    per_minute = sum(len(e.blinks) for e in events) / 30
    assert 15 <= per_minute <= 21


def test_the_schedule_is_a_pure_function_of_seed_and_time() -> None:
    times = [0.5 + 0.0333 * i for i in range(1200)]
    forward = [BlinkSchedule(3).closure(t) for t in times]
    schedule = BlinkSchedule(3)
    shuffled = np.random.default_rng(1).permutation(len(times))
    again = {i: schedule.closure(times[i]) for i in shuffled}  # jumps back and forth
    assert [again[i] for i in range(len(times))] == forward
    assert any(forward) and [BlinkSchedule(4).closure(t) for t in times] != forward


# -- on the default avatar ----------------------------------------------------------------------


def eye_openings(landmarks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Mask of the two eye openings (between the lids) of the open eyes."""
    mask = np.zeros(shape[:2], np.uint8)
    for eye in (landmarks[0, 36:42], landmarks[0, 42:48]):
        cv2.fillPoly(mask, [eye.astype(np.int32)], 1)
    return mask.astype(bool)


def test_the_eyes_close_at_the_blink_peak_and_are_untouched_between_blinks(avatar, landmarks) -> None:
    life = life_of(avatar, landmarks, motion=0.0)
    picture = avatar.frames[0]
    peaks = peak_frames(life, 20)
    assert peaks
    closed = life.apply(peaks[0], picture)
    openings = eye_openings(landmarks, picture.shape)
    gray_open = cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)[openings].astype(int)
    gray_shut = cv2.cvtColor(closed, cv2.COLOR_BGR2GRAY)[openings].astype(int)
    # where the eyes were open, the dark irises are covered by lid (skin and a lash line) and
    # the contrast of iris against white is gone
    assert (gray_shut < 60).sum() < 0.5 * (gray_open < 60).sum()
    assert gray_shut.std() < 0.8 * gray_open.std()
    # ... only around the eyes: the rest of the frame is the avatar's
    x0, y0, x1, y1 = eye_box(landmarks)
    mask = np.ones(picture.shape[:2], bool)
    mask[y0 - 30 : y1 + 20, x0 - 20 : x1 + 20] = False
    assert np.array_equal(closed[mask], picture[mask])
    open_frames = [k for k in range(600) if life.closure(k) == 0]
    assert all(life.apply(k, picture) is picture for k in open_frames[::7])


def test_breath_moves_the_head_a_few_pixels_and_never_the_surround(avatar, landmarks) -> None:
    life = life_of(avatar, landmarks, blinks=False)
    picture = avatar.frames[0]
    cx0, _, cx1, _ = content_rect(avatar)
    assert (cx0, cx1) == (280, 1000)  # a 512x512 photo fitted to 1280x720
    (fx0, fy0), (fx1, fy1) = landmarks[0].min(axis=0).astype(int), landmarks[0].max(axis=0).astype(int)
    face = lambda img: np.float32(cv2.cvtColor(img[fy0:fy1, fx0:fx1], cv2.COLOR_BGR2GRAY))
    reference = face(picture)
    shifts = []
    for k in range(0, 6 * FPS, 3):
        out = life.apply(k, picture)
        assert np.array_equal(out[:, :cx0], picture[:, :cx0]) and np.array_equal(out[:, cx1:], picture[:, cx1:])
        (dx, dy), _ = cv2.phaseCorrelate(reference, face(out))
        shifts.append((dx, dy))
    dy = np.array([s[1] for s in shifts])
    dx = np.array([s[0] for s in shifts])
    # a breath lifts the head by a few pixels and lets it down again; the drift is smaller
    assert 1.5 < dy.max() - dy.min() < 8
    assert np.abs(dx).max() < 5
    # the bottom corners of the photo itself (far from the person) do not move either
    out = life.apply(2 * FPS, picture)
    assert np.array_equal(out[-40:, cx0 : cx0 + 40], picture[-40:, cx0 : cx0 + 40])


def test_the_off_switches(avatar, landmarks) -> None:
    picture = avatar.frames[0]
    still = life_of(avatar, landmarks, blinks=False, motion=0.0)
    assert not still.active
    assert all(still.apply(k, picture) is picture for k in range(0, 1800, 11))
    no_blinks = life_of(avatar, landmarks, blinks=False)
    assert all(no_blinks.closure(k) == 0 for k in range(1800))
    both = life_of(avatar, landmarks)
    peak = peak_frames(both, 20)[0]
    # at a blink's peak the two differ around the eyes only: the same breath, no closing lids
    with_blink, without = both.apply(peak, picture), no_blinks.apply(peak, picture)
    x0, y0, x1, y1 = eye_box(landmarks)
    mask = np.ones(picture.shape[:2], bool)
    mask[y0 - 30 : y1 + 20, x0 - 20 : x1 + 20] = False
    assert np.array_equal(with_blink[mask], without[mask])
    assert np.abs(with_blink[y0:y1, x0:x1].astype(int) - without[y0:y1, x0:x1]).mean() > 8


def test_same_seed_same_frame_same_pixels(avatar, landmarks) -> None:
    picture = avatar.frames[0]
    a, b = life_of(avatar, landmarks, seed=5), life_of(avatar, landmarks, seed=5)
    peak = peak_frames(a, 20)[0]
    for k in (peak, 1000, 3, peak, 77):
        assert np.array_equal(a.apply(k, picture), b.apply(k, picture))
    other = life_of(avatar, landmarks, seed=6)
    assert peak_frames(other, 20) != peak_frames(a, 20)


def test_the_pose_is_drawn_fifteen_times_a_second_and_a_held_idle_frame_costs_nothing(avatar, landmarks) -> None:
    """At 30 fps the breathing pose changes every second frame: the frame between shows the same
    pixels (the same array: nothing is drawn again), and the next pose differs. A talking frame
    (a fresh picture) is always drawn, on the pose of its frame."""
    life = life_of(avatar, landmarks, blinks=False)
    idle = avatar.frames[0]
    start = 3 * FPS  # past the fade-in
    first, held, next_pose = (life.apply(k, idle) for k in (start, start + 1, start + 2))
    assert held is first
    assert not np.array_equal(next_pose, first)
    talking = idle.copy()
    drawn = life.apply(start + 1, talking)
    assert drawn is not first and np.array_equal(drawn, first)  # same picture, same pose: same pixels


def test_life_never_writes_to_the_picture_it_is_given(avatar, landmarks) -> None:
    life = life_of(avatar, landmarks)
    picture = avatar.frames[0]
    assert not picture.flags.writeable
    digest = picture.tobytes()
    for k in peak_frames(life, 10)[:3] + [5, 50]:
        assert life.apply(k, picture) is not picture
    assert picture.tobytes() == digest


def test_an_avatar_without_a_face_simply_does_not_live(tmp_path) -> None:
    path = tmp_path / "wall.png"
    cv2.imwrite(str(path), np.full((200, 300, 3), 128, np.uint8))
    avatar = load_avatar(path, 320, 240)
    life = Life.for_avatar(avatar, FPS, LifeOptions())
    assert not life.active and life.apply(10, avatar.frames[0]) is avatar.frames[0]


# -- in the compositor --------------------------------------------------------------------------


def speech(start: int, frames: int, patch: FacePatch) -> Segment:
    segment = Segment(job=Job(message=None, id=f"job{start}"), start=start)
    for i in range(frames):
        segment.audio.append(np.full(SPF, 1000 + i, dtype=np.int16))
        segment.patches[start + i] = patch
    segment.complete = True
    return segment


def test_the_compositor_draws_life_on_idle_and_talking_frames_alike(avatar, landmarks) -> None:
    life = life_of(avatar, landmarks, seed=2)
    chart = StreamChart(has_pending=lambda: False)
    schedule = Schedule()
    compositor = Compositor(avatar, chart, schedule, RATE, FPS, Metrics(), life=life)
    mouth = FacePatch(x=560, y=210, pixels=np.full((30, 70, 3), 40, np.uint8))  # a dark open mouth
    peaks = peak_frames(life, 30)
    talk_from = peaks[1] - 20
    schedule.append(speech(talk_from, 60, mouth))
    digest = avatar.frames[0].tobytes()
    pictures = {}
    weights = {}
    for k in range(talk_from + 80):
        picture, audio = compositor.render(k)
        assert len(audio) == SPF
        pictures[k], weights[k] = picture, compositor.talking_weight
    assert weights[peaks[1]] == 1.0 and weights[peaks[1] - 10] == 1.0
    assert avatar.frames[0].tobytes() == digest
    # while talking: the picture is the living idle picture with the mouth on it, so the switch
    # shows no jump anywhere but the mouth, and the blink comes while the avatar speaks
    k = peaks[1]
    expected = life.apply(k, mouth.pasted_on(avatar.frames[0]))
    assert np.array_equal(pictures[k], expected)
    outside = np.ones(expected.shape[:2], bool)
    outside[200:250, 550:640] = False
    assert np.array_equal(pictures[k][outside], life.apply(k, avatar.frames[0])[outside])
    x0, y0, x1, y1 = eye_box(landmarks)
    talking_open = pictures[k - 10][y0:y1, x0:x1].astype(int)
    assert np.abs(pictures[k][y0:y1, x0:x1].astype(int) - talking_open).mean() > 8


def test_a_different_talking_avatar_gets_its_own_life_in_a_cross_fade(avatar, landmarks) -> None:
    talking = Avatar(frames=avatar.frames, source=avatar.source, source_digest="other")  # not the same object
    life = life_of(avatar, landmarks)
    talking_life = Life.for_avatar(talking, FPS, LifeOptions(), landmarks=landmarks)
    schedule = Schedule()
    compositor = Compositor(avatar, StreamChart(has_pending=lambda: False), schedule, RATE, FPS, Metrics(),
                            talking_avatar=talking, transition_frames=9, life=life, talking_life=talking_life)  # fmt: skip
    mouth = FacePatch(x=560, y=210, pixels=np.full((30, 70, 3), 40, np.uint8))
    schedule.append(speech(30, 40, mouth))
    for k in range(90):
        picture, audio = compositor.render(k)
        assert len(audio) == SPF and picture.shape == (720, 1280, 3)
        if compositor.talking_weight == 1.0:
            assert np.array_equal(picture, talking_life.apply(k, mouth.pasted_on(talking.frames[0])))
