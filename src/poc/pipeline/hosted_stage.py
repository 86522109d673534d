"""The face stage with a hosted face API: the vendor's video with our audio, on our clock.

A vendor needs the whole utterance, so a job's speech is held until its end, then the vendor is
asked for a video (the stream stays on the idle avatar meanwhile). Its frames are decoded,
fitted and retimed a couple of seconds ahead of the clock, as whole pictures that cross-fade in
and out. If the vendor fails in any way (an error, a timeout, a video that does not decode), the
local engine speaks the words instead, through the local face stage. Each request costs money,
so a job asks the vendor once for its whole life: the request runs in a thread of its own that a
re-plan does not stop (the re-planned job waits for the same answer), and it is cancelled, and
its video deleted, only when the job settles.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import anyio
import numpy as np
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from poc.face.base import FacePatch, RenderedFrame, SpeechSlot
from poc.face.hosted_video import HostedFace, VendorVideo
from poc.jobs import Job
from poc.media.compositor import Compositor
from poc.metrics import Metrics
from poc.pipeline.face_stage import FaceStage, InFlight
from poc.pipeline.job_queue import JobQueue
from poc.pipeline.link import SpeechEnd, SpeechFailed, SpeechPart, StageLink
from poc.speech.base import SpeechChunk

log = logging.getLogger(__name__)

FRAMES_AHEAD_S = 2.0  # a hosted face's whole frames decoded ahead of the clock, at most
EXTRA_LEAD_S = 0.25  # extra time before a hosted face's first frame: whole frames cost more
FETCH_POLL_S = 0.02  # how often the stage looks whether the vendor's answer is in

_Complete = tuple[SpeechEnd, list[SpeechChunk]]  # a job whose speech is all here, and that speech


class _Fetch:
    """A job's one vendor request. Its thread stores the answer; `forget` may run meanwhile, so
    both hold the stage's fetch lock for `path`, `done` and `cancelled`."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()  # the job settled: stop asking, delete what comes
        self.done = threading.Event()  # the answer is in `path` (None: the vendor failed)
        self.path: Path | None = None


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
        self._fetches: dict[Job, _Fetch] = {}  # kept across re-plans, until the job settles
        self._fetch_lock = threading.Lock()  # a fetch thread stores its video while `forget` runs
        self._video_lock = threading.Lock()  # an abandoned read may still hold the decoder
        jobs.when_settled(self.forget)

    def forget(self, job: Job) -> None:
        """The job settled: stop its vendor request and delete its video, now or once it comes."""
        with self._fetch_lock:
            fetch = self._fetches.pop(job, None)
            if fetch is None:
                return
            fetch.cancelled.set()  # the thread stops polling the vendor, and deletes a late video
            video, fetch.path = fetch.path, None
        if video is not None:
            video.unlink(missing_ok=True)

    async def run(self, receive: ObjectReceiveStream[StageLink]) -> None:
        """Take the speech stage's items until it stops (or this is cancelled by a re-plan).
        A job's vendor request starts as soon as its speech is complete, while the jobs before
        it still wait for their videos or play: the vendor renders a backlog side by side, so
        queued messages follow each other instead of each waiting out a whole render on the
        idle avatar. They still play strictly in order."""
        send_complete, receive_complete = anyio.create_memory_object_stream[_Complete](math.inf)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._play_in_order, receive_complete)
            await self._collect(receive, send_complete)

    async def _collect(self, receive: ObjectReceiveStream[StageLink], complete: ObjectSendStream[_Complete]) -> None:
        """Hold each job's speech until its end, then ask the vendor and queue it to play."""
        held: dict[Job, list[SpeechChunk]] = {}  # speech waiting for its end
        async with receive, complete:
            async for link in receive:
                job = link.job
                if job.is_settled:
                    held.pop(job, None)
                elif isinstance(link, SpeechPart):
                    held.setdefault(job, []).append(link.chunk)
                elif isinstance(link, SpeechFailed):  # nothing of it has played: dead-letter it whole
                    held.pop(job, None)
                    self._dead_letter(job, link.reason)
                else:
                    chunks = held.pop(job, [])
                    self._start_fetch(job, _joined(chunks))
                    await complete.send((link, chunks))

    async def _play_in_order(self, complete: ObjectReceiveStream[_Complete]) -> None:
        async with complete:
            async for end, chunks in complete:
                if not end.job.is_settled:
                    await self._end(end, chunks)

    async def _end(self, end: SpeechEnd, chunks: list[SpeechChunk]) -> None:
        """The job's whole speech is here: the vendor's video, or else the local engine."""
        if await self._play(end.job, chunks) or end.job.is_settled:
            return  # played, or settled (cleared, interrupted) while the vendor rendered
        local = self._local
        in_flight: dict[Job, InFlight] = {}
        state = in_flight[end.job] = local.place(end.job)
        for chunk in chunks:
            await local.lay_and_render(state, state.cutter.cut(chunk))
        await local.take(in_flight, end)

    async def _play(self, job: Job, chunks: list[SpeechChunk]) -> bool:
        """The vendor's video with our audio, on our clock; False if the vendor failed."""
        compositor, fps = self._compositor, self._compositor.fps
        audio = _joined(chunks)
        path = await self._video_for(job)
        if path is None:
            return False
        speech_seconds = len(audio) / compositor.sample_rate
        video = await anyio.to_thread.run_sync(self._hosted.open_video, path, speech_seconds)
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

    def _start_fetch(self, job: Job, audio: np.ndarray) -> None:
        """Start the job's one vendor request, unless it runs already (from before a re-plan,
        which keeps the job's speech, so the audio is the same)."""
        if job in self._fetches:
            return
        fetch = _Fetch()
        # A thread of its own, not a task's worker thread: the request must outlive the
        # task that started it, which every re-plan cancels.
        thread = threading.Thread(
            target=self._fetch, args=(fetch, audio, self._compositor.sample_rate),
            name=f"{self._hosted.name}-video-{job.id}", daemon=True,
        )  # fmt: skip
        try:
            thread.start()
        except RuntimeError as error:  # "can't start new thread": no vendor, the local face
            log.warning("could not ask %s for a video (%s); the local engine speaks this message",
                        self._hosted.name, error)  # fmt: skip
            fetch.done.set()  # answered: no video
        self._fetches[job] = fetch

    async def _video_for(self, job: Job) -> Path | None:
        """The job's video from its one vendor request (started when its speech was complete)."""
        fetch = self._fetches.get(job)
        if fetch is None:  # settled meanwhile (`forget` took it): nothing will play
            return None
        # Polled rather than waited for in a worker thread: each re-plan would abandon such a
        # wait, leaving a thread blocked until the vendor answers (up to its timeout). A poll is
        # cancelled at once on any backend, and 20 ms is nothing next to a vendor's seconds.
        while not fetch.done.is_set():
            await anyio.sleep(FETCH_POLL_S)
        return fetch.path

    def _fetch(self, fetch: _Fetch, audio: np.ndarray, sample_rate: int) -> None:
        """In the fetch's thread: ask the vendor, then keep the video for the job, or delete it
        if the job settled meanwhile (nobody else would: `forget` has already run)."""
        path: Path | None = None
        try:
            path = self._hosted.video_for(audio, sample_rate, fetch.cancelled)
        finally:  # `done` whatever happens: the job's stage waits for it
            with self._fetch_lock:
                late = fetch.cancelled.is_set()
                if not late:
                    fetch.path = path
                fetch.done.set()
            if late and path is not None:
                path.unlink(missing_ok=True)


def _joined(chunks: Sequence[SpeechChunk]) -> np.ndarray:
    """A job's whole speech in one array (what the vendor is sent)."""
    return np.concatenate([c.audio for c in chunks]) if chunks else np.zeros(0, np.int16)


def _video_patches(
    video: VendorVideo, slots: Sequence[SpeechSlot], first: int, lock: threading.Lock
) -> list[RenderedFrame]:
    """Whole-frame patches for these slots from the vendor's video (its frame 0 plays at `first`)."""
    with lock:
        return [RenderedFrame(slot.index, FacePatch(0, 0, video.frame(slot.index - first))) for slot in slots]
