"""The face stage (local engine): each job's speech laid onto the frame clock, faces rendered.

A job's first part reserves its place on the frame counter (after the engine's lead time and
after the previous message with room for its blend out); every part's audio is laid onto frame
numbers at once, so the audio is never late, then the engine renders faces for those frames in
small batches in a worker thread and hands them to the compositor as they are ready. Speech
that arrives after its frames were due leaves a silent pause (a natural one, not a cut word).

An engine whose faces improve with later speech (MuseTalk: Whisper attends over its whole
segment) hears each part as it comes but renders a frame only when it is due, about
`render_ahead_seconds` before it is shown, or when the message's speech has all arrived, which
with TTS faster than real time is usually long before. Every frame then sees all the speech
there is by its render time; rendered on arrival, a sentence's frames would never see the next.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Sequence

import anyio
import attrs
from anyio.abc import ObjectReceiveStream

from poc.face.base import FaceEngine, RenderedFrame, SpeechSlot, Utterance
from poc.jobs import Job
from poc.media.compositor import Compositor
from poc.media.timeline import Schedule, Segment, SlotCutter
from poc.metrics import Metrics
from poc.pipeline.link import SpeechFailed, SpeechPart, StageLink
from poc.pipeline.options import PipelineOptions

log = logging.getLogger(__name__)

MIN_LEAD_FRAMES = 2  # a message starts two frames from now at the soonest
MIN_BATCH = 2  # slots fed to the engine per call, at least
ABANDONED_POLL_S = 0.01  # how often a new render looks whether an abandoned one is done


def lead_frames_for(engine: FaceEngine, fps: int) -> int:
    """Frames between the clock's frame and a message's first: the engine's lead, rounded up,
    and one more for the frame the clock is in (also what `bench stations --face-only` places by)."""
    return max(MIN_LEAD_FRAMES, math.ceil(engine.lead_seconds * fps) + 1)


def render_ahead_frames_for(engine: FaceEngine, fps: int, options: PipelineOptions) -> int:
    """How close to air a late-rendering engine's batch is rendered: `render_ahead_seconds`,
    never less than the lead time plus one batch, so a batch started on time is still on time
    (also what `bench stations --face-only` paces by)."""
    batch = max(MIN_BATCH, engine.batch_size)
    return max(lead_frames_for(engine, fps) + batch, round(options.render_ahead_seconds * fps))


def _air_end(schedule: Schedule) -> int | None:
    """One past the last frame the schedule's last message will be on air: where an interrupt
    stops it (its fade frame included), not where its speech would have ended. A re-plan lays
    the next message before the clock's next frame, while the cut one is still in the schedule.
    With nothing scheduled, where the last message on air left it: its mouth may still be
    blending out, and the pause after it is kept all the same."""
    last = next(reversed(list(schedule)), None)
    return schedule.aired_until if last is None else last.air_end


@attrs.define
class InFlight:
    """A job whose speech is being laid out and rendered."""

    segment: Segment
    cutter: SlotCutter
    utterance: Utterance
    first_frame_seen: bool = False
    waiting: list[SpeechSlot] = attrs.Factory(list)  # laid and heard, faces not rendered yet


class FaceStage:
    """Lays speech onto the clock and renders its faces with the local engine."""

    def __init__(
        self, compositor: Compositor, options: PipelineOptions, metrics: Metrics, *, whole_frames: bool = False
    ) -> None:
        """`whole_frames`: messages may cross-fade whole frames (a hosted face), so the gap
        between two leaves room for the longer cross-fade."""
        self._compositor = compositor
        self._options = options
        self._metrics = metrics
        self._whole_frames = whole_frames
        self._engine: FaceEngine | None = None
        # Held by the thread while it renders. On asyncio an abandoned render gives the limiter
        # back at once while its thread goes on, so this is what says it still runs (_in_thread).
        self._engine_lock = threading.Lock()
        self.limiter = anyio.CapacityLimiter(1)  # one render at a time (hosted frames included)
        self.lead_frames = MIN_LEAD_FRAMES
        self._quick_lead_frames = MIN_LEAD_FRAMES
        self._lookahead_samples = math.inf
        self.batch = MIN_BATCH
        self.render_late = False  # the attached engine's faces improve with later speech
        self.render_ahead_frames = 0  # how far ahead of the clock such an engine renders

    def attach(self, engine: FaceEngine) -> None:
        """Render with this engine from now on; its timing sets the lead and the batch."""
        self._engine = engine
        fps, rate = self._compositor.fps, self._compositor.sample_rate
        self.lead_frames = lead_frames_for(engine, fps)
        # A chunk that already holds about the audio the engine looks ahead to needs only the
        # render time: with the CPU engine it goes on air on the frame after next. (Vendors
        # stream faster than real time, so what the chunk lacks arrives within that frame.)
        self._quick_lead_frames = max(1, math.ceil((engine.lead_seconds - engine.lookahead_seconds) * fps))
        self._lookahead_samples = math.ceil(engine.lookahead_seconds * fps) * rate / fps
        self.batch = max(MIN_BATCH, engine.batch_size)
        self.render_late = engine.improves_with_later_audio
        self.render_ahead_frames = render_ahead_frames_for(engine, fps, self._options)

    def queued_seconds(self) -> float:
        """Speech scheduled from the frame on air onwards, in seconds."""
        return self._compositor.schedule.frames_ahead(self._compositor.frame) / self._compositor.fps

    async def run(self, receive: ObjectReceiveStream[StageLink]) -> None:
        """Take the speech stage's items until it stops (or this is cancelled by a re-plan)."""
        in_flight: dict[Job, InFlight] = {}
        async with receive:
            while True:
                for job in [job for job in in_flight if job.is_settled]:
                    del in_flight[job]  # interrupted or cleared: its waiting frames will never show
                try:
                    if any(state.waiting for state in in_flight.values()):
                        await self.render_due(in_flight)
                        link = receive.receive_nowait()
                    else:
                        link = await receive.receive()
                except anyio.WouldBlock:
                    # Frames wait for their time: look again a frame later (a receive with a
                    # timeout could lose the item it was cancelled on).
                    await anyio.sleep(1 / self._compositor.fps)
                    continue
                except anyio.EndOfStream:
                    for state in in_flight.values():  # stopping: what was heard is all there is
                        await self._render_slots(state, self._take_waiting(state), finish=True)
                    break
                if link.job.is_settled:
                    in_flight.pop(link.job, None)
                    continue
                await self.take(in_flight, link)

    async def render_due(self, in_flight: dict[Job, InFlight]) -> None:
        """Render the waiting batches whose first frame is within `render_ahead_frames` of air."""
        horizon = self._compositor.frame + self.render_ahead_frames
        for state in sorted(in_flight.values(), key=lambda state: state.segment.start):
            due = sum(slot.index <= horizon for slot in state.waiting)  # waiting is in frame order
            take = -(-due // self.batch) * self.batch  # whole batches: the last due one may reach past
            if take:
                slots, state.waiting = state.waiting[:take], state.waiting[take:]
                await self._render_slots(state, slots, finish=False)

    async def take(self, in_flight: dict[Job, InFlight], link: StageLink) -> None:
        """One item of a job's speech: its audio laid onto the clock, its faces rendered; the
        job's end completes its segment (the compositor then ends it on its last frame)."""
        job = link.job
        lead = self._lead_for(link)
        state = in_flight.get(job)
        if state is None:
            state = in_flight[job] = self.place(job, lead)
        if isinstance(link, SpeechPart):
            earliest = self._compositor.frame + lead
            slots: list[SpeechSlot] = []
            if state.cutter.next_frame < earliest:
                slots += state.cutter.skip_to(earliest)  # speech came late: pause
            slots += state.cutter.cut(link.chunk)
            await self.lay_and_render(state, slots)
        else:
            await self.lay_and_render(state, state.cutter.flush(), finish=True)
            state.segment.failure = link.reason if isinstance(link, SpeechFailed) else ""
            state.segment.complete = True
            del in_flight[job]

    def place(self, job: Job, lead_frames: int | None = None) -> InFlight:
        """Reserve the job's first frame: after the lead time and after the previous message."""
        assert self._engine is not None, "the pipeline runs its stages only once an engine is attached"
        compositor = self._compositor
        start = compositor.frame + (self.lead_frames if lead_frames is None else lead_frames)
        last_end = _air_end(compositor.schedule)
        if last_end is not None:
            # Room for the previous message's blend out: a whole-frame cross-fade is longer.
            whole = compositor.avatars_differ or self._whole_frames
            blend = compositor.transition_frames if whole else compositor.blend_frames
            gap = max(blend + 1, round(self._options.gap_seconds * compositor.fps))
            start = max(start, last_end + gap)
        segment = Segment(job=job, start=start)
        compositor.schedule.append(segment)
        cutter = SlotCutter(start, compositor.sample_rate, compositor.fps)
        return InFlight(segment=segment, cutter=cutter, utterance=self._engine.start_utterance())

    async def lay_and_render(self, state: InFlight, slots: Sequence[SpeechSlot], finish: bool = False) -> None:
        """Lay the slots' audio onto the clock, then render their faces batch by batch
        (`finish`: the utterance's held-back frames too). The engine hears all the slots before
        the first batch: every frame then has the whole chunk as look-ahead (MuseTalk encodes
        the chunk's audio once instead of once per batch), and batches still come back one by
        one, so the first faces are not held up by the last. An engine that improves with later
        speech renders only the batches that are due, and the rest when they fall due or when
        the message's speech is complete (`finish`)."""
        state.segment.add_slots(slots)  # audio first: it must never wait for the picture
        self._metrics.queued_speech.set(self.queued_seconds())
        if not self.render_late:
            await self._render_slots(state, slots, finish, hear=True)
            return
        if slots:
            await self._in_thread(state.utterance, slots, (), False)  # heard now, rendered when due
            state.waiting += slots
        if finish:  # the message's speech is all here: nothing later can improve its faces
            await self._render_slots(state, self._take_waiting(state), finish=True)
        else:
            await self.render_due({state.segment.job: state})

    @staticmethod
    def _take_waiting(state: InFlight) -> list[SpeechSlot]:
        waiting, state.waiting = state.waiting, []
        return waiting

    async def _render_slots(self, state: InFlight, slots: Sequence[SpeechSlot], finish: bool, hear: bool = False) -> None:
        """Faces for these slots batch by batch (`hear`: the engine hears them all first;
        `finish`: the utterance's held-back frames too)."""
        for begin in range(0, max(1, len(slots)), self.batch):
            batch = slots[begin : begin + self.batch]
            last = finish and begin + self.batch >= len(slots)
            ahead = slots if hear and begin == 0 else ()
            if not batch and not last:
                break
            frames = await self._in_thread(state.utterance, ahead, batch, last)
            state.segment.add_rendered(frames)
            if frames and not state.first_frame_seen:
                state.first_frame_seen = True
                job = state.segment.job
                self._metrics.latency.labels(stage="first_frame").observe(time.monotonic() - job.received_at)

    async def _in_thread(
        self, utterance: Utterance, ahead: Sequence[SpeechSlot], slots: Sequence[SpeechSlot], last: bool
    ) -> list[RenderedFrame]:
        # Abandoned on cancel: a re-plan must not wait for a batch being rendered. But a new
        # render waits here until an abandoned one is done, rather than start a thread of its
        # own: each re-plan in a burst would queue one more batch nobody sees in front of the
        # faces wanted (with MuseTalk, a whole batch on the GPU each).
        while self._engine_lock.locked():
            await anyio.sleep(ABANDONED_POLL_S)
        return await anyio.to_thread.run_sync(
            self._render, utterance, ahead, slots, last, limiter=self.limiter, abandon_on_cancel=True
        )

    def _lead_for(self, link: StageLink) -> int:
        """Frames between now and where this item's audio may start."""
        if isinstance(link, SpeechPart) and len(link.chunk.audio) >= self._lookahead_samples:
            return self._quick_lead_frames
        return self.lead_frames

    def _render(
        self, utterance: Utterance, ahead: Sequence[SpeechSlot], slots: Sequence[SpeechSlot], last: bool
    ) -> list[RenderedFrame]:
        """Faces for these slots, after hearing `ahead` (these slots and the ones fed next). If
        the engine fails, the idle face stands in: the words still play (a message is never
        lost to a lip-sync fault), and the fault is logged."""
        with self._engine_lock:
            recovered = utterance.failures
            try:
                if ahead:
                    utterance.hear(ahead)
                frames = utterance.feed(slots) if slots else []
                if last:
                    frames += utterance.finish()
                return frames
            except Exception:
                self._metrics.engine_errors.inc()
                log.exception("face engine failed on frames %d..%d; showing the idle face",
                              slots[0].index if slots else -1, slots[-1].index if slots else -1)  # fmt: skip
                return [RenderedFrame(index=slot.index, patch=None) for slot in slots]
            finally:
                if utterance.failures > recovered:  # faults the engine turned into idle faces itself
                    self._metrics.engine_errors.inc(utterance.failures - recovered)
