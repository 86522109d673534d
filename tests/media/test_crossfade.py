"""Different idle and talking avatars: the switch cross-fades whole frames over the transition,
both ways, on the one media clock; one shared avatar keeps the mouth-only blend."""

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from poc.face.avatar import Avatar
from poc.face.base import FacePatch
from poc.jobs import Job, Outcome
from poc.media.audio import samples_in_frame
from poc.media.compositor import Compositor, transition_frames_for
from poc.media.timeline import Schedule, Segment
from poc.metrics import Metrics
from poc.statechart import StreamChart

W, H, FPS, RATE = 64, 48, 30, 44100
MOUTH = (8, 16, 12, 10)  # x, y, w, h of the engine's patch


def avatar(values: list[int], name: str) -> Avatar:
    """Frames of distinct flat colours, so any mix of two frames can be read back."""
    frames = []
    for v in values:
        f = np.empty((H, W, 3), np.uint8)
        f[...] = (v, 255 - v, (3 * v) % 256)
        f.setflags(write=False)
        frames.append(f)
    return Avatar(frames=tuple(frames), source=Path(name), source_digest=name)


IDLE = avatar([10, 30, 50], "idle")  # ping-pong cycle of 4
TALKING = avatar([200, 230], "talking")  # cycle of 2: each avatar runs its own cycle on the counter


def make(talking: Avatar | None, transition: int = 5, blend: int = 4) -> tuple[Compositor, Schedule, StreamChart]:
    schedule, chart = Schedule(), StreamChart()
    comp = Compositor(IDLE, chart, schedule, RATE, FPS, Metrics(), blend_frames=blend,
                      talking_avatar=talking, transition_frames=transition)  # fmt: skip
    return comp, schedule, chart


def mouth(value: int) -> FacePatch:
    x, y, w, h = MOUTH
    return FacePatch(x=x, y=y, pixels=np.full((h, w, 3), value, np.uint8))


def segment(start: int, frames: int, patch=lambda k: mouth(250), whole: bool = False) -> Segment:
    seg = Segment(job=Job(message=None, id=f"job{start}"), start=start, whole_frames=whole)
    for i in range(frames):
        seg.audio.append(np.full(samples_in_frame(start + i, RATE, FPS), 1000 + i, np.int16))
        if patch is not None:
            seg.patches[start + i] = patch(start + i)
    seg.complete = True
    return seg


def talking_picture(k: int, patch: FacePatch | None) -> np.ndarray:
    """What the talking side of frame k is: the talking body k with the patch pasted on it."""
    if patch is not None and patch.pixels.shape == (H, W, 3):
        return patch.pixels
    out = TALKING.frame_at(k).copy()
    if patch is not None:
        out[patch.y : patch.y + patch.height, patch.x : patch.x + patch.width] = patch.pixels
    return out


def fade_weight(picture: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Read back the weight of b in a mix of a and b (least squares over every pixel)."""
    d = b.astype(np.float64) - a
    return float(((picture.astype(np.float64) - a) * d).sum() / (d * d).sum())


def run(comp: Compositor, chart: StreamChart, frames: int):
    pictures, audio, states = [], [], []
    for k in range(frames):
        picture, samples = comp.render(k)
        pictures.append(picture)
        audio.append(samples)
        states.append(chart.state_id)
    return pictures, audio, states


def test_transition_frames_follow_the_seconds_and_are_never_zero():
    assert transition_frames_for(0.3, 30) == 9
    assert transition_frames_for(0.3, 25) == 8  # 7.5 rounds to even
    assert transition_frames_for(0.0, 30) == transition_frames_for(0.01, 30) == 1


def test_differing_avatars_crossfade_whole_frames_both_ways():
    comp, schedule, chart = make(TALKING, transition=5)
    seg = segment(start=3, frames=20)
    schedule.append(seg)
    pictures, audio, states = run(comp, chart, 40)

    # The chart is the source of truth: it is TRANSITIONING from the first mixed frame until the
    # blend finishes on the frame that reaches the other side, 5 steps (5 frame periods) each way.
    assert states[:3] == ["idle"] * 3
    assert states[3:7] == ["transitioning"] * 4 and states[7] == "talking"
    assert states[7:23] == ["talking"] * 16
    assert states[23:27] == ["transitioning"] * 4 and states[27] == "idle"
    assert states[27:] == ["idle"] * 13

    # endpoints exact: pure idle before and after, pure talking (body + mouth) while talking
    for k in [*range(3), *range(27, 40)]:
        assert pictures[k] is IDLE.frame_at(k)
    for k in range(7, 23):
        assert np.array_equal(pictures[k], talking_picture(k, mouth(250)))

    # during the fade each picture is the weighted mix of idle k and talking k, whole frame
    weights = []
    for k in [*range(2, 8), *range(22, 28)]:
        idle, talking = IDLE.frame_at(k), talking_picture(k, mouth(250))
        w = (k - 2) / 5 if k < 8 else (27 - k) / 5
        expected = w * talking.astype(np.float64) + (1 - w) * idle
        assert np.abs(pictures[k] - expected).max() <= 0.5 + 1e-9  # every pixel, mouth included
        weights.append(fade_weight(pictures[k], idle, talking))
    assert weights[:6] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0], abs=0.005)  # in, monotonic
    assert weights[6:] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2, 0], abs=0.005)  # out, monotonic
    assert seg.job.outcome is Outcome.PLAYED


def test_the_audio_path_is_the_same_with_or_without_a_crossfade():
    streams = []
    for talking in (None, TALKING):
        comp, schedule, chart = make(talking, transition=7)
        schedule.append(segment(start=2, frames=12))
        _, audio, _ = run(comp, chart, 30)
        assert [len(a) for a in audio] == [samples_in_frame(k, RATE, FPS) for k in range(30)]
        streams.append(np.concatenate(audio))
    assert np.array_equal(streams[0], streams[1])
    assert [int(streams[1][samples_in_frame(0, RATE, FPS) * k]) for k in (1, 2, 13, 14)] == [0, 1000, 1011, 0]


def test_one_shared_avatar_keeps_todays_mouth_blend():
    comp, schedule, chart = make(None, transition=9, blend=4)
    schedule.append(segment(start=0, frames=10))
    pictures, _, states = run(comp, chart, 20)
    assert comp.transition_length == 4
    assert states[:3] == ["transitioning"] * 3 and states[3] == "talking"
    assert states[10:13] == ["transitioning"] * 3 and states[13] == "idle"
    x, y, w, h = MOUTH
    for k, picture in enumerate(pictures):
        outside = picture.copy()
        outside[y : y + h, x : x + w] = IDLE.frame_at(k)[y : y + h, x : x + w]
        assert np.array_equal(outside, IDLE.frame_at(k))  # the body never fades, only the mouth
    mouth_weights = [fade_weight(p[y : y + h, x : x + w], IDLE.frame_at(k)[y : y + h, x : x + w],
                                 mouth(250).pixels) for k, p in enumerate(pictures)]  # fmt: skip
    assert mouth_weights[:5] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0], abs=0.005)
    assert mouth_weights[9:15] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0, 0.0], abs=0.005)


def test_a_late_first_mouth_fades_in_when_it_comes_instead_of_popping_in():
    """The engine is three frames late with the first mouth: the speech starts on time over the
    idle face, and the mouth blend starts when the mouth comes, at a quarter, not at full weight."""
    comp, schedule, chart = make(None, transition=9, blend=4)
    late = segment(start=0, frames=12)
    for k in range(3):
        del late.patches[k]  # not rendered yet when their frames are due
    schedule.append(late)
    pictures, audio, states = run(comp, chart, 24)
    assert [int(a[0]) for a in audio[:4]] == [1000, 1001, 1002, 1003]  # speech did not wait
    x, y, w, h = MOUTH
    weights = [fade_weight(p[y : y + h, x : x + w], IDLE.frame_at(k)[y : y + h, x : x + w],
                           mouth(250).pixels) for k, p in enumerate(pictures)]  # fmt: skip
    assert weights[:8] == pytest.approx([0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0], abs=0.005)
    assert states[:6] == ["transitioning"] * 6 and states[6] == "talking"
    assert states[-1] == "idle" and comp.underruns == 3


def test_a_mouth_that_never_comes_leaves_the_idle_face_and_the_stream_returns_to_idle():
    comp, schedule, chart = make(None, transition=9, blend=4)
    schedule.append(segment(start=0, frames=8, patch=None))
    pictures, audio, states = run(comp, chart, 14)
    assert all(np.array_equal(p, IDLE.frame_at(k)) for k, p in enumerate(pictures))
    assert [int(a[0]) for a in audio[:8]] == list(range(1000, 1008))  # every word still heard
    assert states[-1] == "idle"


def test_whole_pictures_of_their_own_crossfade_even_with_one_avatar():
    full = FacePatch(x=0, y=0, pixels=np.full((H, W, 3), 240, np.uint8))
    comp, schedule, chart = make(None, transition=6, blend=4)
    schedule.append(segment(start=0, frames=10, patch=lambda k: full, whole=True))
    pictures, _, states = run(comp, chart, 20)
    assert comp.transition_length == 6
    assert states[:5] == ["transitioning"] * 5 and states[5] == "talking"
    assert states[10:15] == ["transitioning"] * 5 and states[15] == "idle"
    weights = [fade_weight(p, IDLE.frame_at(k), full.pixels) for k, p in enumerate(pictures)]
    assert weights[:7] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1, 1], abs=0.005)
    assert weights[10:17] == pytest.approx([5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0, 0], abs=0.005)
    assert pictures[7] is full.pixels  # a whole picture is shown as it is, not copied


def test_within_a_message_the_talking_body_is_shown_even_without_a_face():
    comp, schedule, chart = make(TALKING, transition=3)
    schedule.append(segment(start=0, frames=12, patch=None))  # the engine never delivers
    pictures, _, states = run(comp, chart, 12)
    assert states[3:12] == ["talking"] * 9
    for k in range(3, 12):
        assert np.array_equal(pictures[k], TALKING.frame_at(k))
    assert comp.underruns == 12  # counted, and the audio still played


def test_an_interrupt_mid_fade_fades_back_from_where_it_is():
    comp, schedule, chart = make(TALKING, transition=8)
    seg = segment(start=0, frames=100)
    schedule.append(seg)
    pictures = [comp.render(k)[0] for k in range(3)]  # 3/8 of the way in
    assert comp.interrupt() is seg.job
    pictures += [comp.render(k)[0] for k in range(3, 10)]
    weights = [fade_weight(p, IDLE.frame_at(k), talking_picture(k, mouth(250))) for k, p in enumerate(pictures)]
    assert weights == pytest.approx([1 / 8, 2 / 8, 3 / 8, 2 / 8, 1 / 8, 0, 0, 0, 0, 0], abs=0.005)
    assert seg.job.outcome is Outcome.INTERRUPTED and chart.state_id == "idle"


def test_a_message_starting_during_the_fade_out_turns_back_without_a_jump():
    comp, schedule, chart = make(TALKING, transition=8)
    first, second = segment(start=0, frames=10), segment(start=13, frames=10)
    schedule.append(first)
    schedule.append(second)
    for k in range(10):
        comp.render(k)
    weights = []
    for k in range(10, 16):
        picture, _ = comp.render(k)
        weights.append(fade_weight(picture, IDLE.frame_at(k), talking_picture(k, mouth(250))))
    assert weights == pytest.approx([7 / 8, 6 / 8, 5 / 8, 6 / 8, 7 / 8, 1], abs=0.005)
    assert first.job.outcome is Outcome.PLAYED and chart.state_id == "talking"


def test_a_fade_paints_into_one_fresh_picture_and_never_on_the_avatars():
    comp, schedule, chart = make(TALKING, transition=4)
    schedule.append(segment(start=0, frames=8))
    before = [f.copy() for f in IDLE.frames + TALKING.frames]
    pictures = [comp.render(k)[0] for k in range(12)]
    assert all(np.array_equal(a, b) for a, b in zip(before, IDLE.frames + TALKING.frames))
    painted = pictures[:3]  # mid-fade pictures are queued by the writer: each must be its own
    assert len({id(p) for p in painted}) == 3 and all(p.flags.c_contiguous for p in painted)


# -- the service: two avatar files, one log line -------------------------------------------------


def service_with(tmp_path: Path, **env: str):
    from poc.app import Service
    from poc.config import load_settings

    base = {"RTMP_RESOLUTION": "640x360", "RTMP_FPS": "30", "TTS_PROVIDER": "espeak", "HTTP_PORT": "0"}
    settings = load_settings(environ={**base, **env}, env_file=tmp_path / "absent.env")
    return Service(settings)


def test_the_service_loads_two_different_avatar_files_and_says_once_that_one_is_smoother(tmp_path, caplog):
    from poc.paths import DEFAULT_AVATAR

    idle_path = tmp_path / "idle.png"
    portrait = cv2.imread(str(DEFAULT_AVATAR))
    cv2.imwrite(str(idle_path), cv2.flip(portrait, 1) // 2)  # another picture: mirrored, darker
    caplog.set_level(logging.INFO, logger="poc")
    service = service_with(
        tmp_path, STATIC_VIDEO_PATH=str(idle_path), TALKING_FACE_AVATAR_IMAGE=str(DEFAULT_AVATAR), TRANSITION_SECONDS="0.5"
    )

    advice = [r for r in caplog.records if "one shared avatar gives the smoother switch" in r.getMessage()]
    assert len(advice) == 1 and advice[0].levelno == logging.INFO
    compositor = service.pipeline.compositor
    assert compositor.avatar.source == idle_path and compositor.talking_avatar.source == DEFAULT_AVATAR
    assert compositor.avatar.size == compositor.talking_avatar.size == (640, 360)
    assert compositor.transition_frames == 15  # 0.5 s at 30 fps
    picture, _ = compositor.render(0)
    assert picture is compositor.avatar.frame_at(0)  # idle goes out as the idle file
    assert not np.array_equal(picture, compositor.talking_avatar.frame_at(0))


def test_the_engine_draws_on_the_talking_avatar(tmp_path):
    from poc.paths import DEFAULT_AVATAR

    idle_path = tmp_path / "idle.png"
    cv2.imwrite(str(idle_path), np.full((360, 640, 3), (40, 90, 20), np.uint8))  # no face at all
    service = service_with(
        tmp_path, STATIC_VIDEO_PATH=str(idle_path), TALKING_FACE_AVATAR_IMAGE=str(DEFAULT_AVATAR)
    )
    engine = service._build_engine()  # warp would refuse the faceless idle picture
    try:
        assert engine.avatar is service.talking_avatar is service.pipeline.compositor.talking_avatar
    finally:
        engine.close()


def test_one_avatar_file_stays_one_shared_avatar_without_advice(tmp_path, caplog):
    from poc.paths import DEFAULT_AVATAR

    caplog.set_level(logging.INFO, logger="poc")
    shared = str(DEFAULT_AVATAR)
    service = service_with(tmp_path, STATIC_VIDEO_PATH=shared, TALKING_FACE_AVATAR_IMAGE=shared)
    assert service.talking_avatar is service.avatar and not service.pipeline.compositor.avatars_differ
    assert not [r for r in caplog.records if "shared avatar" in r.getMessage()]


def test_a_picture_of_the_wrong_size_is_not_shown_and_the_stream_goes_on(caplog):
    oversized = FacePatch(x=0, y=0, pixels=np.full((H + 10, W, 3), 240, np.uint8))  # an unfitted vendor frame
    comp, schedule, chart = make(None, transition=3)
    seg = segment(start=0, frames=6, patch=lambda k: oversized, whole=True)
    schedule.append(seg)
    pictures, audio, _ = run(comp, chart, 12)
    assert all(p is IDLE.frame_at(k) for k, p in enumerate(pictures))  # the (shared) body instead
    assert [len(a) for a in audio] == [samples_in_frame(k, RATE, FPS) for k in range(12)]
    assert seg.job.outcome is Outcome.PLAYED
    assert len([r for r in caplog.records if "does not fit" in r.getMessage()]) == 1
