"""A re-plan cancels the face stage while its engine renders: the render is abandoned (its thread
goes on), and a burst of re-plans must not queue one more render per re-plan in front of the
faces that are wanted (with MuseTalk each is a whole batch on the GPU)."""

from __future__ import annotations

import threading
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
from poc.pipeline.face_stage import FaceStage
from poc.pipeline.link import SpeechPart, StageLink
from poc.speech.base import SpeechChunk
from poc.statechart import StreamChart

pytestmark = pytest.mark.anyio

RATE, FPS = 8000, 25
REPLANS = 4
SETTLE_S = 0.05  # time for a restarted stage to reach its render (not asserted on)


class GatedEngine:
    """Renders only while `gate` is open; counts the renders of each utterance (one per job)."""

    name = "gated"
    lead_seconds = 0.1
    lookahead_seconds = 0.0
    batch_size = 4
    improves_with_later_audio = False

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.rendering = threading.Event()  # a render is inside the engine
        self.renders: dict[str, int] = {}
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        pass

    def start_utterance(self) -> "GatedUtterance":
        return GatedUtterance(self)

    def close(self) -> None:
        pass


class GatedUtterance:
    failures = 0

    def __init__(self, engine: GatedEngine) -> None:
        self.engine = engine
        self.job = ""  # set by the test once the stage has placed it

    def hear(self, slots: Sequence[SpeechSlot]) -> None:
        pass

    def feed(self, slots: Sequence[SpeechSlot]) -> list[RenderedFrame]:
        engine = self.engine
        engine.rendering.set()
        assert engine.gate.wait(10), "the test never opened the gate"
        with engine._lock:
            engine.renders[self.job] = engine.renders.get(self.job, 0) + 1
        return [RenderedFrame(slot.index, None) for slot in slots]

    def finish(self) -> list[RenderedFrame]:
        return []


def stage_with(engine: GatedEngine) -> FaceStage:
    metrics = Metrics()
    jobs = JobQueue(metrics)
    avatar = Avatar(frames=(np.zeros((8, 8, 3), np.uint8),), source=Path("x"), source_digest="x")
    compositor = Compositor(avatar, StreamChart(has_pending=jobs.has_pending), Schedule(), RATE, FPS, metrics)
    stage = FaceStage(compositor, PipelineOptions(), metrics)
    stage.attach(engine)
    return stage


def one_batch_of_speech(stage: FaceStage, job: Job) -> SpeechPart:
    """Speech for exactly one batch of frames: one render per job."""
    return SpeechPart(job, SpeechChunk(audio=np.full(stage.batch * RATE // FPS, 1000, np.int16)))


async def test_a_burst_of_replans_leaves_at_most_one_abandoned_render_before_the_wanted_one() -> None:
    engine = GatedEngine()
    stage = stage_with(engine)
    original_place = stage.place

    def place(job: Job, lead_frames: int | None = None):
        state = original_place(job, lead_frames)
        state.utterance.job = job.id  # the engine counts renders by job
        return state

    stage.place = place  # type: ignore[method-assign]

    async def generation(job: Job) -> anyio.CancelScope:
        """Start the stage as the pipeline does after a re-plan, and hand it this job's speech."""
        send, receive = anyio.create_memory_object_stream[StageLink](8)
        scope = anyio.CancelScope()

        async def run() -> None:
            with scope:
                await stage.run(receive)

        tg.start_soon(run)
        await send.send(one_batch_of_speech(stage, job))
        send.close()
        return scope

    jobs = [Job(message=TextMessage(type="text", data=f"item {n}"), id=str(n)) for n in range(REPLANS + 2)]
    async with anyio.create_task_group() as tg:
        first = await generation(jobs[0])
        with anyio.fail_after(10):
            while not engine.rendering.is_set():
                await anyio.sleep(0.005)
        first.cancel()  # the re-plan burst: each stage run cancelled while the first render is stuck
        for job in jobs[1:-1]:
            scope = await generation(job)
            await anyio.sleep(SETTLE_S)
            scope.cancel()
        wanted = jobs[-1]
        await generation(wanted)
        await anyio.sleep(SETTLE_S)
        engine.gate.set()
        with anyio.fail_after(10):
            while engine.renders.get(wanted.id, 0) == 0:
                await anyio.sleep(0.005)
        await anyio.sleep(0.2)  # an abandoned render still queued would have run by now
        tg.cancel_scope.cancel()

    abandoned = {job: count for job, count in engine.renders.items() if job != wanted.id}
    assert engine.renders[wanted.id] == 1
    # the render stuck when the burst came, and none of the re-plans' own
    assert abandoned == {jobs[0].id: 1}, f"abandoned renders that ran: {abandoned}"
