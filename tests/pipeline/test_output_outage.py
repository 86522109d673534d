"""While the RTMP output is in an outage, no new message starts: it would play to nobody and be
acked as played. It waits in the queue and plays once frames leave again."""

from __future__ import annotations

import anyio
import pytest

from poc.jobs import Job, Outcome
from poc.media.compositor import Compositor
from poc.media.timeline import Schedule
from poc.metrics import Metrics
from poc.pipeline import JobQueue, Pipeline, PipelineOptions
from poc.speech.resilient import ResilientSpeech
from poc.statechart import StreamChart

from test_pipeline_properties import FPS, RATE, FakeEngine, FakeSpeech, FakeText, fake_decode, make_avatar


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_message_waits_out_an_outage_and_plays_after_it(backend: str) -> None:
    down = [True]

    async def run() -> tuple[Job, int, bool]:
        metrics = Metrics()
        jobs = JobQueue(metrics)
        chart = StreamChart(has_pending=jobs.has_pending)
        compositor = Compositor(make_avatar(), chart, Schedule(), RATE, FPS, metrics, blend_frames=3,
                                on_started=jobs.started, on_settled=jobs.settled)  # fmt: skip
        pipeline = Pipeline(
            jobs, compositor, ResilientSpeech([FakeSpeech()]), fake_decode, PipelineOptions(), metrics,
            engine=FakeEngine(), output_down=lambda: down[0],
        )  # fmt: skip
        job = Job(message=FakeText("1 One two three."), id="1")
        frame = 0
        async with anyio.create_task_group() as tg:
            await tg.start(pipeline.run)
            pipeline.submit(job)
            for frame in range(3 * FPS):  # three seconds of an outage
                compositor.render(frame)
                await anyio.sleep(0.002)
            scheduled_in_outage = compositor.schedule.last_end() is not None
            waiting_in_outage = job in pipeline.queued_jobs and not job.is_settled
            down[0] = False
            for frame in range(frame + 1, frame + 60 * FPS):
                if job.is_settled:
                    break
                compositor.render(frame)
                await anyio.sleep(0.0005)
            tg.cancel_scope.cancel()
        assert waiting_in_outage
        return job, frame, scheduled_in_outage

    job, _, scheduled_in_outage = anyio.run(run, backend=backend)
    assert not scheduled_in_outage, "a message was laid on the clock while the output was down"
    assert job.outcome is Outcome.PLAYED
