"""The speech pipeline: accepted jobs → speech → faces laid onto the frame clock.

Two stages run in one task group and are joined by a bounded memory stream:
- the speech stage takes jobs in order and turns each into speech chunks (TTS in a worker
  thread, one chunk per sentence, or the decoded audio of an audio message), retrying transient
  TTS failures a bounded number of times;
- the face stage reserves each job's place on the frame counter, lays its audio onto frame
  numbers at once (so audio is never late) and renders faces in small batches in a worker
  thread, handing them to the compositor as they are ready.
Both work ahead of the clock (the next message is prepared while the current one plays), up to
a budget in media seconds.

Re-planning: an interrupt, an urgent message or a clear cancels the stages (one cancel scope),
puts every job that is prepared but not yet on air back at the head of the queue in its order
(its synthesised speech is kept, so it is not spoken twice), and starts the stages again. That
is how stale work is dropped at every hop at once.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from typing import AsyncIterator, Callable, Sequence

import anyio
import attrs
import numpy as np
from anyio.abc import TaskStatus

from poc.face.avatar import Avatar
from poc.face.base import FaceEngine, RenderedFrame, SpeechSlot, Utterance
from poc.jobs import Job, Outcome
from poc.media.compositor import Compositor
from poc.media.timeline import Schedule, Segment, SlotCutter
from poc.ops.metrics import Metrics
from poc.speech.base import InvalidSpeechRequest, SpeechChunk, SpeechError, SpeechProvider
from poc.statechart import StreamChart

log = logging.getLogger(__name__)

AudioDecoder = Callable[[bytes, str, int, float], np.ndarray]


@attrs.frozen
class PipelineOptions:
    sample_rate: int
    fps: int
    tts_retries: int = 2
    ahead_seconds: float = 30.0  # speech prepared ahead of the clock, at most
    gap_seconds: float = 0.3  # the pause between two messages
    max_audio_seconds: float = 60.0
    blend_frames: int = 4


@attrs.frozen
class _End:
    """The job's speech is complete."""


@attrs.frozen
class _Failed:
    """The job's speech stopped early; what played so far stays, the job is dead-lettered."""

    reason: str


class _PermanentFailure(Exception):
    pass


@attrs.define
class _InFlight:
    segment: Segment
    cutter: SlotCutter
    utterance: Utterance
    first_frame_seen: bool = False


class Pipeline:
    """Implements the source's JobSink (submit / interrupt / clear) and runs the stages."""

    def __init__(
        self,
        avatar: Avatar,
        speech: SpeechProvider,
        engine: FaceEngine | None,
        decode_audio: AudioDecoder,
        options: PipelineOptions,
        metrics: Metrics,
    ) -> None:
        self.options = options
        self.metrics = metrics
        self._speech = speech
        self._engine = engine
        self._decode_audio = decode_audio
        self.schedule = Schedule()
        self._waiting: deque[Job] = deque()  # accepted, not taken by the speech stage yet
        self._preparing: list[Job] = []  # taken, not on air yet (in order)
        self.chart = StreamChart(has_pending=self.has_pending)
        self.compositor = Compositor(
            avatar,
            self.chart,
            self.schedule,
            options.sample_rate,
            options.fps,
            metrics,
            blend_frames=options.blend_frames,
            on_started=self._on_started,
            on_settled=self._on_settled,
        )
        self._spoken: dict[Job, list[SpeechChunk]] = {}  # complete speech kept across re-plans
        self._wake = anyio.Event()
        self._generation: anyio.CancelScope | None = None
        self._engine_lock = threading.Lock()  # an abandoned render may still be running
        self._engine_limiter = anyio.CapacityLimiter(1)
        self._speech_limiter = anyio.CapacityLimiter(1)
        self._engine_ready = anyio.Event()
        self._shutting_down = False
        self._lead_frames = 2
        self._batch = 6
        if engine is not None:
            self.attach_engine(engine)

    def attach_engine(self, engine: FaceEngine) -> None:
        """Use this engine from now on. The service builds it after the stream is on air (it
        can take seconds); messages accepted before then wait for it."""
        self._engine = engine
        self._lead_frames = max(2, math.ceil(engine.lead_seconds * self.options.fps) + 1)
        self._batch = max(2, int(getattr(engine, "batch_size", 6)))
        self._engine_ready.set()

    # -- JobSink ------------------------------------------------------------------------------

    def has_pending(self) -> bool:
        return bool(self._waiting or self._preparing)

    def submit(self, job: Job, *, urgent: bool = False) -> None:
        if self._shutting_down:
            if job.settle(Outcome.REQUEUED, "the service is shutting down"):
                self._on_settled(job)
            return
        if urgent:
            self.interrupt()
            self._waiting.appendleft(job)
        else:
            self._waiting.append(job)
        self.chart.send("message_accepted")
        self._wake.set()

    def interrupt(self) -> None:
        job = self.compositor.interrupt()
        if job is not None:
            frame = self.compositor.frame
            log.info("message %s: interrupt at frame %d (stream time %.3f s)", job.id, frame, frame / self.options.fps)
        self._replan()

    def clear(self) -> int:
        self.compositor.interrupt()
        count = self._settle_unplayed(Outcome.DROPPED, "cleared by a control message")
        self.chart.send("cleared")
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
        with anyio.move_on_after(deadline + 0.5):
            while self.schedule.head() is not None or self.chart.state_id == "transitioning":
                await anyio.sleep(1 / self.options.fps)
        self.compositor.interrupt(Outcome.REQUEUED)

    def _settle_unplayed(self, outcome: Outcome, reason: str) -> int:
        """Settle every job not yet on air (and drop its prepared work); returns how many."""
        unplayed = [*self._preparing, *self._waiting]
        self._preparing.clear()
        self._waiting.clear()
        self.schedule.remove_not_started()
        self._restart_stages()
        count = 0
        for job in unplayed:
            if job.settle(outcome, reason):
                count += 1
                self._on_settled(job)
        return count

    @property
    def queued_jobs(self) -> list[Job]:
        return [*self._preparing, *self._waiting]

    def queued_seconds(self) -> float:
        return self.schedule.frames_ahead(self.compositor.frame) / self.options.fps

    # -- the stages ---------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the stages forever, restarting them after each re-plan."""
        task_status.started()
        await self._engine_ready.wait()
        while True:
            with anyio.CancelScope() as scope:
                self._generation = scope
                send, receive = anyio.create_memory_object_stream[tuple[Job, object]](8)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._speech_stage, send)
                    tg.start_soon(self._face_stage, receive)
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
        back = [job for job in self._preparing if not job.is_settled]
        self._preparing.clear()
        self._waiting.extendleft(reversed(back))

    def _restart_stages(self) -> None:
        if self._generation is not None:
            self._generation.cancel()
        self._wake.set()

    async def _next_job(self) -> Job:
        ahead_limit = self.options.ahead_seconds * self.options.fps
        while True:
            while self._waiting and self._waiting[0].is_settled:
                self._waiting.popleft()
            if self._waiting and self.schedule.frames_ahead(self.compositor.frame) < ahead_limit:
                job = self._waiting.popleft()
                self._preparing.append(job)
                return job
            self._wake = anyio.Event()
            with anyio.move_on_after(0.1 if self._waiting else math.inf):
                await self._wake.wait()

    async def _speech_stage(self, send: anyio.abc.ObjectSendStream) -> None:
        async with send:
            while True:
                job = await self._next_job()
                emitted = 0
                try:
                    async for chunk in self._speak(job):
                        if emitted == 0:
                            job.speech_ready_at = job.speech_ready_at or time.monotonic()
                            self.metrics.latency.labels(stage="speech_ready").observe(
                                job.speech_ready_at - job.received_at
                            )
                        emitted += 1
                        await send.send((job, chunk))
                    await send.send((job, _End()))
                except _PermanentFailure as failure:
                    if emitted:
                        await send.send((job, _Failed(str(failure))))
                    else:
                        self._dead_letter(job, str(failure))

    async def _speak(self, job: Job) -> AsyncIterator[SpeechChunk]:
        """The job's speech, chunk by chunk, from the cache after a re-plan."""
        if job in self._spoken:
            for chunk in self._spoken[job]:
                yield chunk
            return
        chunks: list[SpeechChunk] = []
        message = job.message
        if message.type == "audio":
            audio = await self._in_speech_thread(self._decode, message)
            chunks.append(SpeechChunk(audio=audio))
            yield chunks[-1]
        else:
            async for chunk in self._synthesize(message, skip=0):
                chunks.append(chunk)
                yield chunk
        self._spoken[job] = chunks

    def _decode(self, message) -> np.ndarray:
        try:
            return self._decode_audio(
                message.audio_bytes(), message.format, self.options.sample_rate, self.options.max_audio_seconds
            )
        except ValueError as error:  # InvalidAudio is a ValueError
            raise _PermanentFailure(f"audio: {error}") from None

    async def _synthesize(self, message, skip: int) -> AsyncIterator[SpeechChunk]:
        """Sentence by sentence; a transient failure restarts the text and skips what was sent."""
        attempts = 0
        sent = skip
        while True:
            try:
                self._speech.check_voice(message.voice, message.language)
                stream = iter(self._speech.synthesize_stream(message.data, message.voice, message.language))
                index = 0
                while True:
                    chunk = await self._in_speech_thread(_next_or_none, stream)
                    if chunk is None:
                        return
                    if index >= sent:
                        sent += 1
                        yield chunk
                    index += 1
            except InvalidSpeechRequest as error:
                raise _PermanentFailure(f"speech: {error}") from None
            except SpeechError as error:
                attempts += 1
                if attempts > self.options.tts_retries:
                    raise _PermanentFailure(
                        f"speech failed after {attempts} attempts: {error}"
                    ) from None
                log.warning("TTS failed (%s); retry %d of %d", error, attempts, self.options.tts_retries)
                await anyio.sleep(0.2 * attempts)
            except _PermanentFailure:
                raise
            except Exception as error:  # a bug or an engine crash must not take the stream down
                log.exception("TTS crashed")
                raise _PermanentFailure(f"speech engine error: {type(error).__name__}: {error}") from None

    async def _in_speech_thread(self, function, *args):
        return await anyio.to_thread.run_sync(
            function, *args, limiter=self._speech_limiter, abandon_on_cancel=True
        )

    async def _face_stage(self, receive: anyio.abc.ObjectReceiveStream) -> None:
        in_flight: dict[Job, _InFlight] = {}
        async with receive:
            async for job, item in receive:
                if job.is_settled:
                    in_flight.pop(job, None)
                    continue
                state = in_flight.get(job)
                if state is None:
                    state = in_flight[job] = self._place(job)
                if isinstance(item, SpeechChunk):
                    earliest = self.compositor.frame + self._lead_frames
                    slots: list[SpeechSlot] = []
                    if state.cutter.next_frame < earliest:
                        slots += state.cutter.skip_to(earliest)  # speech came late: pause
                    slots += state.cutter.cut(item)
                    await self._lay_and_render(state, slots)
                else:
                    await self._lay_and_render(state, state.cutter.flush(), finish=True)
                    state.segment.failure = item.reason if isinstance(item, _Failed) else ""
                    state.segment.complete = True
                    del in_flight[job]

    def _place(self, job: Job) -> _InFlight:
        """Reserve the job's first frame: after the lead time and after the previous message."""
        start = self.compositor.frame + self._lead_frames
        last_end = self.schedule.last_end()
        if last_end is not None:
            gap = max(self.options.blend_frames + 1, round(self.options.gap_seconds * self.options.fps))
            start = max(start, last_end + gap)
        segment = Segment(job=job, start=start)
        self.schedule.append(segment)
        cutter = SlotCutter(start, self.options.sample_rate, self.options.fps)
        return _InFlight(segment=segment, cutter=cutter, utterance=self._engine.start_utterance())

    async def _lay_and_render(self, state: _InFlight, slots: Sequence[SpeechSlot], finish: bool = False) -> None:
        state.segment.add_slots(slots)  # audio first: it must never wait for the picture
        self.metrics.queued_speech.set(self.queued_seconds())
        for begin in range(0, max(1, len(slots)), self._batch):
            batch = slots[begin : begin + self._batch]
            last = finish and begin + self._batch >= len(slots)
            frames = await anyio.to_thread.run_sync(
                self._render, state.utterance, batch, last,
                limiter=self._engine_limiter, abandon_on_cancel=True,
            )  # fmt: skip
            state.segment.add_rendered(frames)
            if frames and not state.first_frame_seen:
                state.first_frame_seen = True
                job = state.segment.job
                self.metrics.latency.labels(stage="first_frame").observe(time.monotonic() - job.received_at)

    def _render(self, utterance: Utterance, slots: Sequence[SpeechSlot], last: bool) -> list[RenderedFrame]:
        """Faces for these slots. If the engine fails, the idle face stands in: the words
        still play (a message is never lost to a lip-sync fault), and the fault is logged."""
        with self._engine_lock:
            recovered = utterance.failures
            try:
                frames = utterance.feed(slots) if slots else []
                if last:
                    frames += utterance.finish()
                return frames
            except Exception:
                self.metrics.engine_errors.inc()
                log.exception("face engine failed on frames %d..%d; showing the idle face",
                              slots[0].index if slots else -1, slots[-1].index if slots else -1)  # fmt: skip
                return [RenderedFrame(index=slot.index, patch=None) for slot in slots]
            finally:
                if utterance.failures > recovered:  # faults the engine turned into idle faces itself
                    self.metrics.engine_errors.inc(utterance.failures - recovered)

    # -- callbacks from the compositor (on the event loop) -------------------------------------

    def _on_started(self, job: Job) -> None:
        if job in self._preparing:
            self._preparing.remove(job)
        delay = (job.on_air_at or time.monotonic()) - job.received_at
        self.metrics.latency.labels(stage="on_air").observe(delay)
        log.info(
            "message %s: on air at frame %d, %.2f s after it was received",
            job.id, self.compositor.frame - 1, delay,
        )  # fmt: skip

    def _on_settled(self, job: Job) -> None:
        if job.outcome is not None:
            self.metrics.messages.labels(outcome=job.outcome.value).inc()
        self._spoken.pop(job, None)
        if job in self._preparing:
            self._preparing.remove(job)
        played = ""
        if job.on_air_at is not None:
            played = f" after {time.monotonic() - job.on_air_at:.1f} s on air"
        reason = f": {job.reason}" if job.reason else ""
        log.info("message %s: %s%s%s", job.id, job.outcome.value if job.outcome else "?", played, reason)

    def _dead_letter(self, job: Job, reason: str) -> None:
        if job in self._preparing:
            self._preparing.remove(job)
        if job.settle(Outcome.DEAD_LETTERED, reason):
            self._on_settled(job)
        self.chart.send("failed")


def _next_or_none(iterator):
    return next(iterator, None)
