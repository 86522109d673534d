"""The frame -> encoder-step mapping: hand-computed cases at 25 and 30 fps, and exactness."""

from fractions import Fraction

import pytest

from poc.face.musetalk.timing import LOOKAHEAD_SECONDS, audio_steps_for_frame, frame_start_step


@pytest.mark.parametrize(
    ("frame", "steps"),
    [(0, range(-4, 6)), (1, range(-2, 8)), (2, range(0, 10)), (25, range(46, 56)), (1000, range(1996, 2006))],
)
def test_25fps_window_is_2f_minus_4_to_2f_plus_5(frame: int, steps: range) -> None:
    assert audio_steps_for_frame(frame, 25) == steps


@pytest.mark.parametrize(
    ("frame", "steps"),
    [
        (0, range(-4, 6)),  # starts at step 0
        (1, range(-3, 7)),  # 1/30 s = step 1.67 -> step 1
        (2, range(-1, 9)),  # step 3.33 -> 3
        (3, range(1, 11)),  # step 5 exactly
        (4, range(2, 12)),  # step 6.67 -> 6
        (29, range(44, 54)),  # step 48.33 -> 48
        (30, range(46, 56)),  # 1 s = step 50
    ],
)
def test_30fps_window_follows_the_fractional_frame_start(frame: int, steps: range) -> None:
    assert audio_steps_for_frame(frame, 30) == steps


def test_30fps_does_not_drift_after_a_day() -> None:
    day = 30 * 86_400
    assert frame_start_step(day, 30) == 50 * 86_400
    # one frame later: (day + 1) * 50 / 30 = 4_320_001.67 -> 4_320_001
    assert audio_steps_for_frame(day + 1, 30) == range(4_319_997, 4_320_007)


def test_ntsc_rate_is_exact_not_truncated() -> None:
    ntsc = Fraction(30000, 1001)
    assert frame_start_step(30000, ntsc) == 50050  # 1001 s of video = 50050 steps exactly
    # 2997 * 50 * 1001 / 30000 = 4999.995: just short of step 5000 (int(29.97) = 29 would give 5167)
    assert frame_start_step(2997, ntsc) == 4999


def test_window_spans_80ms_before_to_120ms_after_the_frame_start() -> None:
    for fps in (25, 30, 24, 50):
        for frame in range(300):
            steps = audio_steps_for_frame(frame, fps)
            start_ms = Fraction(frame * 1000, fps)
            assert len(steps) == 10
            before = start_ms - steps.start * 20
            after = steps.stop * 20 - start_ms
            assert 80 <= before < 100, (fps, frame, before)
            assert 100 < after <= 120, (fps, frame, after)
            if fps == 25:
                assert (before, after) == (80, 120)
    assert LOOKAHEAD_SECONDS == pytest.approx(0.12)


def test_bad_frame_or_rate_is_refused() -> None:
    with pytest.raises(ValueError):
        frame_start_step(-1, 25)
    with pytest.raises(ValueError):
        frame_start_step(1, 0)
