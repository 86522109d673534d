"""What goes on air each frame: exact audio per frame, idle through the same path, held faces
on underrun, blended switches and one settlement per message."""

from pathlib import Path

import numpy as np

from poc.face.avatar import Avatar
from poc.face.base import FacePatch
from poc.jobs import Job, Outcome
from poc.media.compositor import Compositor
from poc.media.timeline import Schedule, Segment
from poc.metrics import Metrics
from poc.statechart import StreamChart

W, H, FPS, RATE = 64, 48, 30, 44100
SPF = RATE // FPS  # 1470


def make_avatar(frames: int = 3) -> Avatar:
    pics = tuple(np.full((H, W, 3), 10 * i, dtype=np.uint8) for i in range(frames))
    return Avatar(frames=pics, source=Path("test"), source_digest="x")


def make(frames: int = 3):
    schedule = Schedule()
    chart = StreamChart(has_pending=lambda: False)
    comp = Compositor(make_avatar(frames), chart, schedule, RATE, FPS, Metrics(), blend_frames=4)
    return comp, schedule, chart


def speech_segment(start: int, frames: int, rendered: bool = True) -> Segment:
    seg = Segment(job=Job(message=None, id=f"job{start}"), start=start)
    for i in range(frames):
        seg.audio.append(np.full(SPF, 1000 + i, dtype=np.int16))
        if rendered:
            seg.patches[start + i] = FacePatch(x=8, y=8, pixels=np.full((8, 8, 3), 255, np.uint8))
    seg.complete = True
    return seg


def test_idle_is_the_cycle_frame_plus_exact_silence():
    comp, _, chart = make(frames=3)
    for k in range(12):
        picture, audio = comp.render(k)
        assert len(audio) == SPF and not audio.any()
        assert picture[0, 0, 0] == 10 * [0, 1, 2, 1][k % 4]  # ping-pong, no jump at the wrap
    assert chart.state_id == "idle"


def test_fractional_samples_per_frame_never_drift():
    schedule = Schedule()
    comp = Compositor(make_avatar(), StreamChart(), schedule, 44100, 24, Metrics())
    total = sum(len(comp.render(k)[1]) for k in range(24 * 10))
    assert total == 44100 * 10


def test_speech_plays_in_lockstep_and_blends_in_and_out():
    comp, schedule, chart = make()
    seg = speech_segment(start=5, frames=20)
    schedule.append(seg)
    states, weights, audio_first = [], [], []
    for k in range(40):
        picture, audio = comp.render(k)
        states.append(chart.state_id)
        weights.append(comp.talking_weight)
        audio_first.append(int(audio[0]))
    assert audio_first[:5] == [0] * 5
    assert audio_first[5:25] == [1000 + i for i in range(20)]  # frame i carries slot i's samples
    assert audio_first[25:] == [0] * 15
    assert states[5] == "transitioning" and weights[5:9] == [0.25, 0.5, 0.75, 1.0]
    assert states[9] == "talking"
    assert states[25] == "transitioning" and weights[25:29] == [0.75, 0.5, 0.25, 0.0]
    assert states[-1] == "idle"
    assert seg.job.outcome is Outcome.PLAYED


def test_late_faces_are_held_and_audio_keeps_flowing():
    comp, schedule, _ = make()
    seg = speech_segment(start=0, frames=10, rendered=False)
    seg.patches[0] = FacePatch(x=8, y=8, pixels=np.full((8, 8, 3), 200, np.uint8))
    schedule.append(seg)
    audio_first = [int(comp.render(k)[1][0]) for k in range(10)]
    assert audio_first == [1000 + i for i in range(10)]
    assert comp.underruns == 9


def test_interrupt_fades_the_next_frame_and_settles_once():
    comp, schedule, chart = make()
    seg = speech_segment(start=0, frames=100)
    schedule.append(seg)
    for k in range(10):
        comp.render(k)
    assert comp.interrupt() is seg.job
    assert comp.interrupt() is None  # a second interrupt has nothing left to stop
    _, faded = comp.render(10)
    assert faded[0] == 1010 and faded[-1] == 0  # a fade, not a click
    for k in range(11, 20):
        assert not comp.render(k)[1].any()
    assert seg.job.outcome is Outcome.INTERRUPTED
    assert chart.state_id == "idle"


def test_a_segment_dropped_before_air_never_plays():
    comp, schedule, _ = make()
    seg = speech_segment(start=3, frames=5)
    schedule.append(seg)
    seg.job.settle(Outcome.DROPPED)
    assert all(not comp.render(k)[1].any() for k in range(10))
    assert len(schedule) == 0


def test_short_speech_inside_the_blend_still_ends_idle():
    comp, schedule, chart = make()
    schedule.append(speech_segment(start=0, frames=2))
    for k in range(12):
        comp.render(k)
    assert chart.state_id == "idle" and comp.talking_weight == 0.0


def test_speech_that_failed_midway_plays_what_it_had_then_is_dead_lettered_with_the_reason():
    settled, events = [], []

    class Events:
        def after_transition(self, event: str) -> None:
            events.append(event)

    chart = StreamChart(has_pending=lambda: False)
    chart.add_listener(Events())
    schedule = Schedule()
    comp = Compositor(make_avatar(), chart, schedule, RATE, FPS, Metrics(), blend_frames=4, on_settled=settled.append)
    seg = speech_segment(start=0, frames=8)
    seg.failure = "speech failed: the vendor went away"
    schedule.append(seg)
    audio_first = [int(comp.render(k)[1][0]) for k in range(16)]
    assert audio_first[:8] == [1000 + i for i in range(8)]  # everything it had plays
    assert seg.job.outcome is Outcome.DEAD_LETTERED and seg.job.reason == seg.failure
    assert settled == [seg.job] and "failed" in events and chart.state_id == "idle"


def test_an_interrupt_for_a_shutdown_requeues_the_message_with_its_reason():
    comp, schedule, chart = make()
    seg = speech_segment(start=0, frames=100)
    schedule.append(seg)
    for k in range(5):
        comp.render(k)
    assert comp.interrupt(Outcome.REQUEUED) is seg.job
    for k in range(5, 15):
        comp.render(k)
    assert seg.job.outcome is Outcome.REQUEUED and seg.job.reason == "cut short by a shutdown"
    assert chart.state_id == "idle"
