"""The face stage with a hosted face API: the vendor's video with our audio, on our clock.

A vendor needs the whole utterance, so a job's speech is held until its end, then the vendor is
asked for a video (the stream stays on the idle avatar meanwhile). Its frames are decoded,
fitted and retimed a couple of seconds ahead of the clock, as whole pictures that cross-fade in
and out. If the vendor fails in any way (an error, a timeout, a video that does not decode), the
local engine speaks the words instead, through the local face stage. A vendor's video is kept
until its job settles, so a re-plan never asks the vendor twice.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import anyio
import numpy as np
from anyio.abc import ObjectReceiveStream

from poc.face.base import FacePatch, RenderedFrame, SpeechSlot
from poc.face.hosted_video import HostedFace, VendorVideo
from poc.jobs import Job
from poc.media.compositor import Compositor
from poc.metrics import Metrics
from poc.pipeline.face_stage import FaceStage, InFlight
from poc.pipeline.job_queue import JobQueue
from poc.pipeline.link import SpeechEnd, SpeechFailed, SpeechPart, StageLink
from poc.speech.base import SpeechChunk

FRAMES_AHEAD_S = 2.0  # a hosted face's whole frames decoded ahead of the clock, at most
EXTRA_LEAD_S = 0.25  # extra time before a hosted face's first frame: whole frames cost more


class HostedStage:
    def __init__(
        self,
        hosted: HostedFace,
        local: FaceStage,
        jobs: JobQueue,
        compositor: Compositor,
        metrics: Metrics,
        dead_letter: Callable[[Job, str], None],
    ) -> None:
        self._hosted = hosted
        self._local = local
        self._compositor = compositor
        self._metrics = metrics
        self._dead_letter = dead_letter
        self._videos: dict[Job, Path] = {}  # a vendor's video kept across re-plans
        self._video_lock = threading.Lock()  # an abandoned read may still hold the decoder
        jobs.when_settled(self.forget)

    def forget(self, job: Job) -> None:
        """Delete the job's video file (it has settled)."""
        video = self._videos.pop(job, None)
        if video is not None:
            video.unlink(missing_ok=True)

    async def run(self, receive: ObjectReceiveStream[StageLink]) -> None:
        """Take the speech stage's items until it stops (or this is cancelled by a re-plan)."""
        in_flight: dict[Job, InFlight] = {}  # jobs the local engine speaks (the vendor failed)
        held: dict[Job, list[SpeechChunk]] = {}  # speech waiting for its end
        async with receive:
            async for link in receive:
                job = link.job
                if job.is_settled:
                    in_flight.pop(job, None)
                    held.pop(job, None)
                elif job in in_flight:
                    await self._local.take(in_flight, link)
                elif isinstance(link, SpeechPart):
                    held.setdefault(job, []).append(link.chunk)
                elif isinstance(link, SpeechFailed):  # nothing of it has played: dead-letter it whole
                    held.pop(job, None)
                    self._dead_letter(job, link.reason)
                else:
                    await self._end(in_flight, link, held.pop(job, []))

    async def _end(self, in_flight: dict[Job, InFlight], end: SpeechEnd, chunks: list[SpeechChunk]) -> None:
        """The job's whole speech is here: the vendor's video, or else the local engine."""
        if await self._play(end.job, chunks):
            return
        local = self._local
        state = in_flight[end.job] = local.place(end.job)
        for chunk in chunks:
            await local.lay_and_render(state, state.cutter.cut(chunk))
        await local.take(in_flight, end)

    async def _play(self, job: Job, chunks: list[SpeechChunk]) -> bool:
        """The vendor's video with our audio, on our clock; False if the vendor failed."""
        compositor, fps = self._compositor, self._compositor.fps
        audio = np.concatenate([c.audio for c in chunks]) if chunks else np.zeros(0, np.int16)
        path = self._videos.get(job)  # kept across a re-plan: never asked for twice
        if path is None:
            cancelled = threading.Event()
            try:
                path = await anyio.to_thread.run_sync(
                    self._hosted.video_for, audio, compositor.sample_rate, cancelled,
                    abandon_on_cancel=True,
                )  # fmt: skip
            finally:
                cancelled.set()  # after an interrupt, the abandoned thread stops polling the vendor
            if path is None:
                return False
            self._videos[job] = path
        video = await anyio.to_thread.run_sync(self._hosted.open_video, path)
        if video is None:
            return False
        # Its first whole frames are decoded and fitted before they are due.
        state = self._local.place(job, lead_frames=self._local.lead_frames + round(EXTRA_LEAD_S * fps))
        segment = state.segment
        segment.whole_frames = True
        slots = state.cutter.cut(SpeechChunk(audio=audio)) + state.cutter.flush()
        segment.add_slots(slots)  # audio first: it must never wait for the picture
        self._metrics.queued_speech.set(self._local.queued_seconds())
        batch_size = self._local.batch
        try:
            for begin in range(0, len(slots), batch_size):
                batch = slots[begin : begin + batch_size]
                # Whole pictures are large: hold only the next couple of seconds in memory.
                while batch[0].index - compositor.frame > FRAMES_AHEAD_S * fps:
                    await anyio.sleep(1 / fps)
                frames = await anyio.to_thread.run_sync(
                    _video_patches, video, batch, segment.start, self._video_lock,
                    limiter=self._local.limiter, abandon_on_cancel=True,
                )  # fmt: skip
                segment.add_rendered(frames)
                if begin == 0:
                    self._metrics.latency.labels(stage="first_frame").observe(time.monotonic() - job.received_at)
        finally:
            with self._video_lock:  # an abandoned read may still hold the decoder
                video.close()
        segment.complete = True
        return True


def _video_patches(
    video: VendorVideo, slots: Sequence[SpeechSlot], first: int, lock: threading.Lock
) -> list[RenderedFrame]:
    """Whole-frame patches for these slots from the vendor's video (its frame 0 plays at `first`)."""
    with lock:
        return [RenderedFrame(slot.index, FacePatch(0, 0, video.frame(slot.index - first))) for slot in slots]
