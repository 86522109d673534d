"""Speech laid onto the frame counter (media/timeline.py), without a clock or an engine.

What must hold: every frame carries exactly its share of samples (rate/fps, the remainder spread
so the total never drifts), no sample is lost, reordered or invented across chunk borders, a
phoneme lands on the frame where it sounds, a late sentence leaves a silent gap rather than a
cut word, and the schedule plays segments in order and re-plans only what has not started.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from support.lanes import examples

from poc.jobs import Job
from poc.media.audio import frame_sample_start, samples_in_frame
from poc.media.timeline import Schedule, Segment, SlotCutter
from poc.speech.base import PhonemeMark, SpeechChunk

# 44100/30 divides (1470 a frame); 8000/30 and 22050/24 do not (the counts alternate).
RATES = [(44100, 30), (8000, 30), (22050, 24), (48000, 25)]


def ramp(n: int, start: int = 1) -> np.ndarray:
    """Distinct non-zero samples, so a lost, repeated or reordered sample shows."""
    return ((np.arange(n) + start) % 30000 + 1).astype(np.int16)


def cut_at(audio: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    edges = [0, *sorted(c % (len(audio) + 1) for c in cuts), len(audio)]
    return [audio[a:b] for a, b in zip(edges, edges[1:])]


@settings(max_examples=examples(200), deadline=None)
@given(
    rate_fps=st.sampled_from(RATES),
    first_frame=st.integers(0, 10_000),
    length=st.integers(0, 20_000),
    cuts=st.lists(st.integers(0, 20_000), max_size=12),
)
def test_any_chunking_gives_contiguous_frames_of_exactly_their_sample_count(
    rate_fps: tuple[int, int], first_frame: int, length: int, cuts: list[int]
) -> None:
    rate, fps = rate_fps
    audio = ramp(length)
    cutter = SlotCutter(first_frame, rate, fps)
    slots = [slot for piece in cut_at(audio, cuts) for slot in cutter.cut(SpeechChunk(piece))]
    slots += cutter.flush()

    assert [s.index for s in slots] == list(range(first_frame, first_frame + len(slots)))
    assert all(len(s.audio) == samples_in_frame(s.index, rate, fps) for s in slots)
    assert all(s.audio.dtype == np.int16 for s in slots)
    played = np.concatenate([s.audio for s in slots]) if slots else np.zeros(0, np.int16)
    # Every sample once, in order; the tail padded with silence to the end of its frame only.
    assert np.array_equal(played[:length], audio)
    assert not played[length:].any()
    assert len(played) - length < samples_in_frame(first_frame + max(0, len(slots) - 1), rate, fps)
    assert cutter.next_frame == first_frame + len(slots)


def test_frames_cut_from_a_long_run_never_drift_from_rate_over_fps() -> None:
    rate, fps, first = 8000, 30, 7
    cutter = SlotCutter(first, rate, fps)
    frames = 3000
    total = frame_sample_start(first + frames, rate, fps) - frame_sample_start(first, rate, fps)
    slots = cutter.cut(SpeechChunk(ramp(total)))
    assert len(slots) == frames and cutter.flush() == []
    assert {len(s.audio) for s in slots} == {266, 267}  # 266.67 a frame, spread
    assert sum(len(s.audio) for s in slots) == total


def test_samples_short_of_a_frame_wait_for_the_next_chunk() -> None:
    cutter = SlotCutter(0, 44100, 30)
    assert cutter.cut(SpeechChunk(ramp(1000))) == []  # less than a frame (1470): held back
    [slot] = cutter.cut(SpeechChunk(ramp(1000, start=1001)))
    assert np.array_equal(slot.audio, ramp(1470))  # the sentences joined without a gap
    [tail] = cutter.flush()
    assert tail.index == 1
    assert np.array_equal(tail.audio[:530], ramp(530, start=1471)) and not tail.audio[530:].any()


def test_flush_with_nothing_pending_adds_no_frame_and_cutting_goes_on_after_it() -> None:
    cutter = SlotCutter(5, 44100, 30)
    assert len(cutter.cut(SpeechChunk(ramp(1470)))) == 1
    assert cutter.flush() == []
    [slot] = cutter.cut(SpeechChunk(ramp(1470)))
    assert slot.index == 6


def test_a_phoneme_lands_on_the_frame_sounding_at_its_middle_across_chunk_borders() -> None:
    rate, fps = 3000, 30  # 100 samples a frame: frame k's middle is sample 100k + 50
    cutter = SlotCutter(0, rate, fps)
    slots = cutter.cut(SpeechChunk(ramp(150), (PhonemeMark(0, "h"), PhonemeMark(120, "a"))))
    # the second chunk's marks count from its own start: 150 + 10 = 160, 150 + 240 = 390
    slots += cutter.cut(SpeechChunk(ramp(300), (PhonemeMark(10, "l"), PhonemeMark(240, "o"))))
    slots += cutter.flush()
    assert [s.phoneme for s in slots] == ["h", "a", "l", "l", "o"]


def test_audio_without_timings_has_no_phonemes() -> None:
    cutter = SlotCutter(0, 44100, 30)
    slots = cutter.cut(SpeechChunk(ramp(5000))) + cutter.flush()
    assert slots and all(s.phoneme is None for s in slots)


def test_skip_to_flushes_then_leaves_silent_frames_up_to_the_next_sentence() -> None:
    rate, fps = 8000, 30
    cutter = SlotCutter(10, rate, fps)
    assert cutter.cut(SpeechChunk(ramp(100), (PhonemeMark(0, "m"),))) == []
    slots = cutter.skip_to(14)
    assert [s.index for s in slots] == [10, 11, 12, 13]
    assert all(len(s.audio) == samples_in_frame(s.index, rate, fps) for s in slots)
    assert np.array_equal(slots[0].audio[:100], ramp(100)) and not slots[0].audio[100:].any()
    assert slots[0].phoneme == "m"
    assert all(not s.audio.any() and s.phoneme is None for s in slots[1:])
    # The next sentence starts on the frame asked for, and the old marks do not sound in it.
    [after] = cutter.cut(SpeechChunk(ramp(samples_in_frame(14, rate, fps))))
    assert after.index == 14 and after.phoneme is None


def test_skip_to_a_frame_already_reached_only_flushes() -> None:
    cutter = SlotCutter(3, 44100, 30)
    cutter.cut(SpeechChunk(ramp(10)))
    assert [s.index for s in cutter.skip_to(2)] == [3]
    assert cutter.skip_to(4) == []
    assert cutter.next_frame == 4


def segment(start: int, frames: int, playing: bool = False) -> Segment:
    seg = Segment(job=Job(message=None, id=f"job{start}"), start=start, playing=playing)  # type: ignore[arg-type]
    seg.audio = [np.zeros(1470, np.int16)] * frames
    return seg


def test_the_schedule_plays_segments_in_the_order_they_were_added() -> None:
    schedule = Schedule()
    assert schedule.head() is None and schedule.last_end() is None and len(schedule) == 0
    first, second, third = segment(0, 10), segment(10, 5), segment(20, 3)
    for seg in (first, second, third):
        schedule.append(seg)
    assert list(schedule) == [first, second, third] and len(schedule) == 3
    assert schedule.head() is first and schedule.last_end() == 23
    assert schedule.pop_head() is first
    assert schedule.head() is second and list(schedule) == [second, third]


def test_remove_not_started_takes_out_what_has_not_played_and_keeps_the_rest_in_order() -> None:
    schedule = Schedule()
    playing, later, last = segment(0, 10, playing=True), segment(10, 5), segment(15, 5)
    for seg in (playing, later, last):
        schedule.append(seg)
    assert schedule.remove_not_started() == [later, last]
    assert list(schedule) == [playing] and schedule.last_end() == 10
    assert schedule.remove_not_started() == []
    assert list(schedule) == [playing]


@pytest.mark.parametrize(
    ("now", "ahead"),
    [
        (0, 10 + 5 + 8),  # all of it still to come
        (4, 6 + 5 + 8),  # the first one part played
        (12, 5 + 8),  # in the pause between two: the pause is not speech
        (17, 3 + 8),
        (22, 6),
        (40, 0),  # all played
    ],
)
def test_frames_ahead_counts_only_speech_still_to_play(now: int, ahead: int) -> None:
    schedule = Schedule()
    for seg in (segment(0, 10), segment(15, 5), segment(20, 8)):  # frames 0-9, 15-19, 20-27
        schedule.append(seg)
    assert schedule.frames_ahead(now) == ahead
