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
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator, Sequence

import anyio
import attrs
import numpy as np
from anyio.abc import TaskStatus

from poc.face.avatar import Avatar
from poc.face.base import FaceEngine, FacePatch, RenderedFrame, SpeechSlot, Utterance
from poc.face.hosted_video import HostedFace, VendorVideo
from poc.jobs import Job, Outcome
from poc.media.compositor import Compositor, transition_frames_for
from poc.media.timeline import Schedule, Segment, SlotCutter
from poc.ops.metrics import Metrics
from poc.speech.base import InvalidSpeechRequest, SpeechChunk, SpeechError, SpeechProvider
from poc.statechart import StreamChart

log = logging.getLogger(__name__)

HOSTED_FRAMES_AHEAD_S = 2.0  # a hosted face's whole frames decoded ahead of the clock, at most
HOSTED_LEAD_S = 0.25  # extra time before a hosted face's first frame: whole frames cost more

AudioDecoder = Callable[[bytes, str, int, float], np.ndarray]


@attrs.frozen
class PipelineOptions:
    sample_rate: int
    fps: int
    ahead_seconds: float = 30.0  # speech prepared ahead of the clock, at most
    gap_seconds: float = 0.3  # the pause between two messages
    max_audio_seconds: float = 60.0
    blend_frames: int = 4
    transition_seconds: float = 0.3  # whole-frame cross-fade (avatars differ / whole-picture faces)


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
        talking_avatar: Avatar | None = None,  # None: `avatar` is both idle and talking
        hosted: HostedFace | None = None,  # a hosted face API, with `engine` as its safety net
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
            talking_avatar=talking_avatar,
            transition_frames=transition_frames_for(options.transition_seconds, options.fps),
        )
        self._spoken: dict[Job, list[SpeechChunk]] = {}  # complete speech kept across re-plans
        self._hosted = hosted
        self._hosted_videos: dict[Job, Path] = {}  # a vendor's video kept across re-plans
        self._video_lock = threading.Lock()
        self._wake = anyio.Event()
        self._generation: anyio.CancelScope | None = None
        self._engine_lock = threading.Lock()  # an abandoned render may still be running
        self._engine_limiter = anyio.CapacityLimiter(1)
        self._speech_limiter = anyio.CapacityLimiter(1)
        self._engine_ready = anyio.Event()
        self._shutting_down = False
        self._lead_frames = 2
        self._quick_lead_frames = 2
        self._lookahead_samples = math.inf
        self._batch = 6
        if engine is not None:
            self.attach_engine(engine)

    def attach_engine(self, engine: FaceEngine) -> None:
        """Use this engine from now on. The service builds it after the stream is on air (it
        can take seconds); messages accepted before then wait for it."""
        self._engine = engine
        fps = self.options.fps
        self._lead_frames = max(2, math.ceil(engine.lead_seconds * fps) + 1)
        # A chunk that already holds the audio the engine looks ahead to needs only the render
        # time: with the CPU engine it goes on air on the frame after next.
        self._quick_lead_frames = max(1, math.ceil((engine.lead_seconds - engine.lookahead_seconds) * fps))
        self._lookahead_samples = (math.ceil(engine.lookahead_seconds * fps) + 1) * self.options.sample_rate / fps
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

    async def hand_back(self, reason: str) -> int:
        """Stop speaking and give every held message back unplayed (REQUEUED, so the source
        returns it to the broker): the one on air is cut with the usual blend, the others never
        started. Returns once the blend is over (at most ~1 s), with how many were handed back.
        Keeping new messages away meanwhile is the caller's job (the source pauses consuming)."""
        count = self._settle_unplayed(Outcome.REQUEUED, reason)
        if self.compositor.interrupt(Outcome.REQUEUED) is not None:
            count += 1  # settled by the compositor at the next frame
        self.chart.send("cleared")  # processing -> idle when nothing had reached the air
        with anyio.move_on_after(1.0):
            while self.schedule.head() is not None or self.chart.state_id == "transitioning":
                await anyio.sleep(1 / self.options.fps)
        return count

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
            async for chunk in self._synthesize(message):
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

    async def _synthesize(self, message) -> AsyncIterator[SpeechChunk]:
        """Chunk by chunk from the speech provider. Retries and the fallback chain live in the
        provider (speech/resilient.py), so an error here is final for this message."""
        try:
            stream = await self._in_speech_thread(self._start_speech, message)
            while True:
                chunk = await self._in_speech_thread(_next_or_none, stream)
                if chunk is None:
                    return
                yield chunk
        except InvalidSpeechRequest as error:
            raise _PermanentFailure(f"speech: {error}") from None
        except SpeechError as error:
            raise _PermanentFailure(f"speech failed: {error}") from None
        except Exception as error:  # a bug or an engine crash must not take the stream down
            log.exception("TTS crashed")
            raise _PermanentFailure(f"speech engine error: {type(error).__name__}: {error}") from None

    def _start_speech(self, message) -> Iterator[SpeechChunk]:
        self._speech.check_voice(message.voice, message.language)
        return iter(self._speech.synthesize_stream(message.data, message.voice, message.language))

    async def _in_speech_thread(self, function, *args):
        return await anyio.to_thread.run_sync(
            function, *args, limiter=self._speech_limiter, abandon_on_cancel=True
        )

    async def _face_stage(self, receive: anyio.abc.ObjectReceiveStream) -> None:
        in_flight: dict[Job, _InFlight] = {}
        held: dict[Job, list[SpeechChunk]] = {}  # a hosted face needs the whole utterance first
        async with receive:
            async for job, item in receive:
                if job.is_settled:
                    in_flight.pop(job, None)
                    held.pop(job, None)
                    continue
                if self._hosted is not None and job not in in_flight:
                    if isinstance(item, SpeechChunk):
                        held.setdefault(job, []).append(item)
                        continue
                    chunks = held.pop(job, [])
                    if isinstance(item, _Failed):  # nothing of it has played: dead-letter it whole
                        self._dead_letter(job, item.reason)
                        continue
                    if await self._play_hosted(job, chunks):
                        continue
                    state = in_flight[job] = self._place(job)  # the vendor failed: speak locally
                    for chunk in chunks:
                        await self._lay_and_render(state, state.cutter.cut(chunk))
                await self._local_face(in_flight, job, item)

    async def _local_face(self, in_flight: dict[Job, _InFlight], job: Job, item: object) -> None:
        """The local engine: audio laid onto the clock as it arrives, faces in small batches."""
        lead = self._lead_for(item)
        state = in_flight.get(job)
        if state is None:
            state = in_flight[job] = self._place(job, lead)
        if isinstance(item, SpeechChunk):
            earliest = self.compositor.frame + lead
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

    async def _play_hosted(self, job: Job, chunks: list[SpeechChunk]) -> bool:
        """The vendor's video with our audio, on our clock; False if the vendor failed (the
        caller then speaks the words with the local engine)."""
        assert self._hosted is not None
        audio = np.concatenate([c.audio for c in chunks]) if chunks else np.zeros(0, np.int16)
        path = self._hosted_videos.get(job)  # kept across a re-plan: never asked for twice
        if path is None:
            cancelled = threading.Event()
            try:
                path = await anyio.to_thread.run_sync(
                    self._hosted.video_for, audio, self.options.sample_rate, cancelled,
                    abandon_on_cancel=True,
                )  # fmt: skip
            finally:
                cancelled.set()  # after an interrupt, the abandoned thread stops polling the vendor
            if path is None:
                return False
            self._hosted_videos[job] = path
        video = await anyio.to_thread.run_sync(self._hosted.open_video, path)
        if video is None:
            return False
        # Its first whole frames are decoded and fitted before they are due.
        state = self._place(job, lead_frames=self._lead_frames + round(HOSTED_LEAD_S * self.options.fps))
        segment = state.segment
        segment.whole_frames = True
        slots = state.cutter.cut(SpeechChunk(audio=audio)) + state.cutter.flush()
        segment.add_slots(slots)  # audio first: it must never wait for the picture
        self.metrics.queued_speech.set(self.queued_seconds())
        try:
            for begin in range(0, len(slots), self._batch):
                batch = slots[begin : begin + self._batch]
                # Whole pictures are large: hold only the next couple of seconds in memory.
                while batch[0].index - self.compositor.frame > HOSTED_FRAMES_AHEAD_S * self.options.fps:
                    await anyio.sleep(1 / self.options.fps)
                frames = await anyio.to_thread.run_sync(
                    _video_patches, video, batch, segment.start, self._video_lock,
                    limiter=self._engine_limiter, abandon_on_cancel=True,
                )  # fmt: skip
                segment.add_rendered(frames)
                if begin == 0:
                    self.metrics.latency.labels(stage="first_frame").observe(time.monotonic() - job.received_at)
        finally:
            with self._video_lock:  # an abandoned read may still hold the decoder
                video.close()
        segment.complete = True
        return True

    def _lead_for(self, item: object) -> int:
        """Frames between now and where this item's audio may start."""
        if isinstance(item, SpeechChunk) and len(item.audio) >= self._lookahead_samples:
            return self._quick_lead_frames
        return self._lead_frames

    def _place(self, job: Job, lead_frames: int | None = None) -> _InFlight:
        """Reserve the job's first frame: after the lead time and after the previous message."""
        start = self.compositor.frame + (self._lead_frames if lead_frames is None else lead_frames)
        last_end = self.schedule.last_end()
        if last_end is not None:
            # Room for the previous message's blend out: a whole-frame cross-fade is longer.
            whole = self.compositor.avatars_differ or self._hosted is not None
            blend = self.compositor.transition_frames if whole else self.options.blend_frames
            gap = max(blend + 1, round(self.options.gap_seconds * self.options.fps))
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
        video = self._hosted_videos.pop(job, None)
        if video is not None:
            video.unlink(missing_ok=True)
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


def _video_patches(
    video: VendorVideo, slots: Sequence[SpeechSlot], first: int, lock: threading.Lock
) -> list[RenderedFrame]:
    """Whole-frame patches for these slots from the vendor's video (its frame 0 plays at `first`)."""
    with lock:
        frames = []
        for slot in slots:
            frames.append(RenderedFrame(slot.index, FacePatch(0, 0, video.frame(slot.index - first))))
        return frames


def _next_or_none(iterator):
    return next(iterator, None)
