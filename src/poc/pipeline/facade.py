"""The Pipeline: the source's JobSink, and the stages run in one task group.

Re-planning: an interrupt, an urgent message or a clear cancels the stages (one cancel scope),
puts every job that is prepared but not yet on air back at the head of the queue in its order
(its speech is kept, so it is not spoken twice), and starts the stages again. That is how stale
work is dropped at every hop at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus

from poc.face.base import FaceEngine
from poc.face.hosted_video import HostedFace
from poc.jobs import Job, Outcome
from poc.media.compositor import Compositor
from poc.metrics import Metrics
from poc.pipeline.face_stage import FaceStage
from poc.pipeline.hosted_stage import HostedStage
from poc.pipeline.job_queue import JobQueue
from poc.pipeline.link import StageLink
from poc.pipeline.options import AudioDecoder, PipelineOptions
from poc.pipeline.speech_stage import SpeechStage
from poc.speech.base import SpeechProvider

log = logging.getLogger(__name__)

LINK_BUFFER = 8  # speech items between the stages, at most
HAND_BACK_WAIT_S = 1.0  # longest wait for the blend out after a hand-back


class Pipeline:
    """Implements the source's JobSink (submit / interrupt / clear) and runs the stages.

    `jobs` must be the queue whose `started`/`settled` the compositor calls and whose
    `has_pending` guards the compositor's statechart (app.py wires them so)."""

    def __init__(
        self,
        jobs: JobQueue,
        compositor: Compositor,
        speech: SpeechProvider,
        decode_audio: AudioDecoder,
        options: PipelineOptions,
        metrics: Metrics,
        *,
        engine: FaceEngine | None = None,  # None: attach_engine() once it is built
        hosted: HostedFace | None = None,  # a hosted face API, with the engine as its safety net
        output_down: Callable[[], bool] = lambda: False,  # the RTMP output is in an outage now
    ) -> None:
        self.jobs = jobs
        self.compositor = compositor
        self.chart = compositor.chart
        self.schedule = compositor.schedule
        self.options = options
        self.metrics = metrics
        self._speech = SpeechStage(
            jobs, compositor, speech, decode_audio, options, metrics, self._dead_letter, output_down
        )
        self._faces = FaceStage(compositor, options, metrics, whole_frames=hosted is not None)
        self._hosted = (
            None
            if hosted is None
            else HostedStage(hosted, self._faces, jobs, compositor, metrics, self._dead_letter)
        )
        self._generation: anyio.CancelScope | None = None
        self._engine_ready = anyio.Event()
        self._shutting_down = False
        if engine is not None:
            self.attach_engine(engine)

    def attach_engine(self, engine: FaceEngine) -> None:
        """Use this engine from now on. The service builds it after the stream is on air (it
        can take seconds); messages accepted before then wait for it."""
        self._faces.attach(engine)
        self._engine_ready.set()

    # -- JobSink ------------------------------------------------------------------------------

    def has_pending(self) -> bool:
        return self.jobs.has_pending()

    def submit(self, job: Job, *, urgent: bool = False) -> None:
        if self._shutting_down:
            self.jobs.settle(job, Outcome.REQUEUED, "the service is shutting down")
            return
        if urgent:
            self.interrupt()
        self.jobs.add(job, first=urgent)
        self.chart.message_accepted()

    def interrupt(self) -> None:
        job = self.compositor.interrupt()
        if job is not None:
            frame = self.compositor.frame
            log.info("message %s: interrupt at frame %d (stream time %.3f s)", job.id, frame, frame / self.compositor.fps)
        self._replan()

    def clear(self) -> int:
        self.compositor.interrupt()
        count = self._settle_unplayed(Outcome.DROPPED, "cleared by a control message")
        self.chart.cleared()
        return count

    async def shutdown(self, deadline: float) -> None:
        """Stop taking work: everything not yet on air goes back to the broker (REQUEUED); the
        message on air finishes if it ends within `deadline` seconds, else it is cut with a
        blend and requeued too. Returns once nothing is on air (or after the deadline)."""
        self._shutting_down = True
        self._settle_unplayed(Outcome.REQUEUED, "the service is shutting down")
        left = self.compositor.seconds_left()
        if left is None or left > deadline:
            self.compositor.interrupt(Outcome.REQUEUED)
        await self._until_off_air(deadline + 0.5)
        self.compositor.interrupt(Outcome.REQUEUED)

    async def hand_back(self, reason: str) -> int:
        """Stop speaking and give every held message back unplayed (REQUEUED, so the source
        returns it to the broker): the one on air is cut with the usual blend, the others never
        started. Returns once the blend is over (at most ~1 s), with how many were handed back.
        Keeping new messages away meanwhile is the caller's job (the source pauses consuming)."""
        count = self._settle_unplayed(Outcome.REQUEUED, reason)
        if self.compositor.interrupt(Outcome.REQUEUED) is not None:
            count += 1  # settled by the compositor at the next frame
        self.chart.cleared()  # processing -> idle when nothing had reached the air
        await self._until_off_air(HAND_BACK_WAIT_S)
        return count

    @property
    def queued_jobs(self) -> list[Job]:
        return self.jobs.jobs

    def queued_seconds(self) -> float:
        return self._faces.queued_seconds()

    # -- the stages ---------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the stages forever, restarting them after each re-plan."""
        task_status.started()
        await self._engine_ready.wait()
        faces = self._faces if self._hosted is None else self._hosted
        while True:
            with anyio.CancelScope() as scope:
                self._generation = scope
                send, receive = anyio.create_memory_object_stream[StageLink](LINK_BUFFER)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._speech.run, send)
                    tg.start_soon(faces.run, receive)
            # Between the cancel and the stages unwinding, a stage may still have taken a job
            # or placed a segment, so the hand-back happens here, once the stages are gone.
            self._take_back_unstarted()

    def _replan(self) -> None:
        """Drop prepared-but-not-started work and restart the stages (see run())."""
        self._take_back_unstarted()
        self._restart_stages()

    def _take_back_unstarted(self) -> None:
        """Jobs prepared but not on air go back to the head of the queue, in their order."""
        self.schedule.remove_not_started()
        self.jobs.take_back()

    def _restart_stages(self) -> None:
        if self._generation is not None:
            self._generation.cancel()
        self.jobs.wake()

    def _settle_unplayed(self, outcome: Outcome, reason: str) -> int:
        """Settle every job not yet on air (and drop its prepared work); returns how many."""
        unplayed = self.jobs.take_all()
        self.schedule.remove_not_started()
        self._restart_stages()
        return sum(self.jobs.settle(job, outcome, reason) for job in unplayed)

    def _dead_letter(self, job: Job, reason: str) -> None:
        self.jobs.settle(job, Outcome.DEAD_LETTERED, reason)
        # This job never reached the air. Only in PROCESSING is the chart about it (back to idle
        # if nothing else waits); while another message is on air, `failed` would blend that
        # one's mouth out and it would play on with the idle face.
        if self.chart.processing.is_active:
            self.chart.failed()

    async def _until_off_air(self, timeout: float) -> None:
        """Wait (at most `timeout` s) until nothing plays and no blend is running."""
        with anyio.move_on_after(timeout):
            while self.schedule.head() is not None or self.chart.transitioning.is_active:
                await anyio.sleep(1 / self.compositor.fps)
