"""The face stage with an engine whose faces improve with later speech (MuseTalk): every part is
heard as it arrives, a frame is rendered only when it is due or the speech is complete, and
still every slot gets exactly one face, in order, before it is shown."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import anyio
import numpy as np
import pytest

from poc.face.avatar import Avatar
from poc.face.base import RenderedFrame, SpeechSlot
from poc.jobs import Job
from poc.media.compositor import Compositor
from poc.media.timeline import Schedule
from poc.messages import TextMessage
from poc.metrics import Metrics
from poc.pipeline import JobQueue, PipelineOptions
from poc.pipeline.face_stage import FaceStage, InFlight
from poc.pipeline.link import SpeechEnd, SpeechPart, StageLink
from poc.speech.base import SpeechChunk
from poc.statechart import StreamChart

RATE, FPS = 8000, 25


class LoggingEngine:
    """Logs each call with the frame on air when it was made."""

    name = "logging"
    lead_seconds = 0.1
    lookahead_seconds = 0.0
    batch_size = 4

    def __init__(self, late: bool) -> None:
        self.improves_with_later_audio = late
        self.log: list[tuple[str, list[int], int]] = []
        self.compositor: Compositor | None = None

    def warm_up(self) -> None:
        pass

    def start_utterance(self) -> "LoggingUtterance":
        return LoggingUtterance(self)

    def close(self) -> None:
        pass

    def note(self, call: str, slots: Sequence[SpeechSlot]) -> None:
        assert self.compositor is not None
        self.log.append((call, [s.index for s in slots], self.compositor.frame))


class LoggingUtterance:
    failures = 0

    def __init__(self, engine: LoggingEngine) -> None:
        self.engine = engine

    def hear(self, slots: Sequence[SpeechSlot]) -> None:
        self.engine.note("hear", slots)

    def feed(self, slots: Sequence[SpeechSlot]) -> list[RenderedFrame]:
        self.engine.note("feed", slots)
        return [RenderedFrame(s.index, None) for s in slots]

    def finish(self) -> list[RenderedFrame]:
        self.engine.note("finish", [])
        return []


def stage_with(engine: LoggingEngine) -> tuple[FaceStage, Compositor]:
    metrics = Metrics()
    jobs = JobQueue(metrics)
    avatar = Avatar(frames=(np.zeros((8, 8, 3), np.uint8),), source=Path("x"), source_digest="x")
    compositor = Compositor(avatar, StreamChart(has_pending=jobs.has_pending), Schedule(), RATE, FPS, metrics)
    engine.compositor = compositor
    stage = FaceStage(compositor, PipelineOptions(render_ahead_seconds=1.0), metrics)
    stage.attach(engine)
    return stage, compositor


def seconds_of_speech(seconds: float) -> SpeechChunk:
    return SpeechChunk(audio=np.full(int(seconds * RATE), 1000, np.int16))


def fed(engine: LoggingEngine) -> list[int]:
    return [i for call, indices, _ in engine.log if call == "feed" for i in indices]


def take_in_turn(stage: FaceStage, engine: LoggingEngine, links: list[StageLink]) -> tuple[InFlight, list[list]]:
    """The stage takes the links in order (one job); its state and the engine's log after each."""

    async def take() -> tuple[InFlight, list[list]]:
        in_flight: dict[Job, InFlight] = {}
        states, logs = [], []
        for link in links:
            await stage.take(in_flight, link)
            states += list(in_flight.values())
            logs.append(list(engine.log))
        return states[0], logs

    return anyio.run(take)


def test_a_late_engine_hears_each_part_at_once_and_renders_only_what_is_due() -> None:
    engine = LoggingEngine(late=True)
    stage, compositor = stage_with(engine)
    job = Job(message=TextMessage(type="text", data="words"), id="j")
    links = [SpeechPart(job, seconds_of_speech(3.0)), SpeechPart(job, seconds_of_speech(2.0)), SpeechEnd(job)]
    state, (first, second, _) = take_in_turn(stage, engine, links)
    start = state.segment.start
    horizon = compositor.frame + stage.render_ahead_frames
    # the first part is heard whole, then only the batches starting within the horizon are fed
    assert first[0] == ("hear", list(range(start, start + 75)), 0)
    first_fed = [i for call, indices, _ in first if call == "feed" for i in indices]
    assert first_fed and max(first_fed) < horizon + stage.batch
    assert first_fed == list(range(start, start + len(first_fed)))
    # the second part is heard before anything more is fed; nothing more is due
    assert second[len(first)][0] == "hear" and all(call != "feed" for call, _, _ in second[len(first) :])
    # the end renders the rest, in order, then finishes: one face per slot
    assert fed(engine) == list(range(start, start + 125))
    assert engine.log[-1][0] == "finish"
    assert sorted(state.segment.patches) == list(range(start, start + 125))


def test_an_engine_that_needs_no_later_speech_renders_each_part_as_it_comes() -> None:
    engine = LoggingEngine(late=False)
    stage, _ = stage_with(engine)
    job = Job(message=TextMessage(type="text", data="words"), id="j")
    take_in_turn(stage, engine, [SpeechPart(job, seconds_of_speech(3.0))])
    assert len(fed(engine)) == 75


@pytest.mark.slow  # waits out about 5 s of clock per backend (README, Tests)
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_waiting_frames_are_rendered_as_the_clock_reaches_them_before_they_are_shown(backend: str) -> None:
    """The stage's own loop with the clock running and the speech's end never arriving: the
    waiting frames are fed as they fall due, each before it is shown and none far ahead."""
    engine = LoggingEngine(late=True)
    stage, compositor = stage_with(engine)
    job = Job(message=TextMessage(type="text", data="words"), id="j")

    async def run() -> None:
        send, receive = anyio.create_memory_object_stream[StageLink](4)
        async with anyio.create_task_group() as tg:
            tg.start_soon(stage.run, receive)
            await send.send(SpeechPart(job, seconds_of_speech(4.0)))
            for frame in range(130):
                compositor.render(frame)
                await anyio.sleep(2 / FPS)  # two ticks of the stage's look: the clock at about real time
            tg.cancel_scope.cancel()

    anyio.run(run, backend=backend)
    start = engine.log[0][1][0]
    assert fed(engine) == list(range(start, start + 100))  # all 4 s, in order, without an end
    for call, indices, on_air in engine.log:
        if call == "feed":
            assert indices[0] > on_air, f"frame {indices[0]} fed at {on_air}: too late"
            assert indices[0] <= on_air + stage.render_ahead_frames, f"frame {indices[0]} fed at {on_air}: not due yet"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_when_the_speech_stage_ends_the_waiting_frames_and_the_held_back_ones_are_rendered(backend: str) -> None:
    """The speech stage's stream closing means no more speech comes: every heard frame gets its
    face, the ones the engine holds back for look-ahead included (finish)."""
    engine = LoggingEngine(late=True)
    stage, _ = stage_with(engine)
    job = Job(message=TextMessage(type="text", data="words"), id="j")

    async def run() -> None:
        send, receive = anyio.create_memory_object_stream[StageLink](4)
        async with send:
            await send.send(SpeechPart(job, seconds_of_speech(3.0)))
        with anyio.fail_after(5):
            await stage.run(receive)

    anyio.run(run, backend=backend)
    start = engine.log[0][1][0]
    assert fed(engine) == list(range(start, start + 75))
    assert engine.log[-1][0] == "finish"
