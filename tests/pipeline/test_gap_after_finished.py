"""The pause between two messages is kept even when the next one is placed after the previous
one has left the schedule (its last frame played, its mouth still blending out): the next
message starts `gap_seconds` after where the previous one went off air, never sooner, and its
mouth never cuts into the previous one's blend out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from poc.face.avatar import Avatar
from poc.face.base import FacePatch, RenderedFrame
from poc.jobs import Job, Outcome
from poc.media.compositor import Compositor
from poc.media.timeline import Schedule
from poc.metrics import Metrics
from poc.pipeline import PipelineOptions
from poc.pipeline.face_stage import FaceStage, InFlight
from poc.speech.base import SpeechChunk
from poc.statechart import StreamChart

RATE, FPS = 8000, 25
BLEND = 7  # a mouth blend out lasting about as long as the pause between messages
GAP = 8  # 0.3 s at 25 fps, the default pause (longer than BLEND + 1)
SIZE = 8


class StillEngine:
    """Timing only: the test lays the faces itself."""

    name = "still"
    lead_seconds = 0.1  # four frames of lead at 25 fps
    lookahead_seconds = 0.0
    improves_with_later_audio = False
    batch_size = 4

    def warm_up(self) -> None:
        pass

    def start_utterance(self) -> None:
        return None

    def close(self) -> None:
        pass


def stage_and_compositor() -> tuple[FaceStage, Compositor]:
    metrics = Metrics()
    avatar = Avatar(frames=(np.zeros((SIZE, SIZE, 3), np.uint8),), source=Path("x"), source_digest="x")
    compositor = Compositor(
        avatar, StreamChart(has_pending=lambda: False), Schedule(), RATE, FPS, metrics, blend_frames=BLEND
    )
    stage = FaceStage(compositor, PipelineOptions(gap_seconds=GAP / FPS), metrics)
    stage.attach(StillEngine())  # type: ignore[arg-type]
    return stage, compositor


def lay(state: InFlight, seconds: float, marker: int) -> None:
    """The whole message at once: its audio (every sample `marker`) and a mouth of that value."""
    cutter = state.cutter
    slots = cutter.cut(SpeechChunk(audio=np.full(int(seconds * RATE), marker, np.int16))) + cutter.flush()
    state.segment.add_slots(slots)
    mouth = np.full((SIZE, SIZE, 3), marker // 10, np.uint8)
    state.segment.add_rendered(RenderedFrame(slot.index, FacePatch(x=0, y=0, pixels=mouth)) for slot in slots)
    state.segment.complete = True


class OnAir:
    """The compositor's frames, one at a time: what was heard and whose mouth was seen."""

    def __init__(self, compositor: Compositor) -> None:
        self.compositor = compositor
        self.heard: list[int] = []  # the marker heard on each frame (0: silence)
        self.seen: list[int] = []  # the mouth pixel value on each frame (0: idle)

    def tick(self, count: int = 1) -> None:
        for _ in range(count):
            picture, audio = self.compositor.render(self.compositor.frame)
            self.heard.append(int(audio.max()))
            self.seen.append(int(picture[0, 0, 0]))

    def frames_of(self, marker: int) -> list[int]:
        return [k for k, heard in enumerate(self.heard) if heard == marker]


def test_the_next_message_keeps_the_pause_after_the_previous_one_left_the_schedule() -> None:
    stage, compositor = stage_and_compositor()
    air = OnAir(compositor)
    first, second = Job(message=None, id="1"), Job(message=None, id="2")
    lay(stage.place(first), 0.4, marker=1000)
    while not first.is_settled:
        air.tick()
    assert first.outcome is Outcome.PLAYED and len(compositor.schedule) == 0
    assert compositor.chart.transitioning.is_active  # its mouth is still blending out
    lay(stage.place(second), 0.4, marker=2000)  # the next speech comes now
    while not second.is_settled:
        air.tick()
    air.tick(BLEND + 1)

    last_of_first, first_of_second = air.frames_of(1000)[-1], air.frames_of(2000)[0]
    pause = first_of_second - last_of_first - 1
    assert pause >= GAP, f"a pause of {pause} frames between the messages, not {GAP}"
    # The first mouth has blended out wholly (the idle face is back) before the second begins.
    between = air.seen[last_of_first + 1 : first_of_second]
    assert 0 in between, f"the second message began while the first mouth blended out: {between}"


def test_after_an_interrupt_the_next_message_follows_the_stop_frame_and_the_pause() -> None:
    stage, compositor = stage_and_compositor()
    air = OnAir(compositor)
    first, second = Job(message=None, id="1"), Job(message=None, id="2")
    lay(stage.place(first), 4.0, marker=1000)
    while not compositor.chart.talking.is_active:
        air.tick()
    air.tick(5)
    assert compositor.interrupt() is first
    stop_at = compositor.frame
    while not first.is_settled:
        air.tick()
    assert first.outcome is Outcome.INTERRUPTED and len(compositor.schedule) == 0
    state = stage.place(second)
    # where the cut one stopped (its fade frame included), then the pause; not its speech's end
    assert state.segment.start == max(compositor.frame + stage.lead_frames, stop_at + 1 + GAP)
