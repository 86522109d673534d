"""The speech stage: jobs in play order → their speech, part by part, for the face stage.

TTS runs in a worker thread (one sentence per part), an audio message is decoded there in one
part. Retries and the fallback chain live in the provider (speech/resilient.py), so an error
here is final for the message: before any part was sent the job is dead-lettered here; after,
a `SpeechFailed` tells the face stage to end what is already playing. Speech with no audio at
all (a voice that says nothing for "___", audio that decodes to no samples) is dead-lettered
too: an empty segment would end as played with nothing said.

A job's complete speech is kept until it settles, so a re-plan (which takes prepared jobs back)
never asks the voice twice for the same words.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import AsyncIterator, Callable, Iterator, TypeVar

import anyio
import numpy as np
from anyio.abc import ObjectSendStream

from poc.errors import describe_error
from poc.jobs import Job
from poc.media.compositor import Compositor
from poc.metrics import Metrics
from poc.pipeline.job_queue import JobQueue
from poc.pipeline.link import SpeechEnd, SpeechFailed, SpeechPart, StageLink
from poc.pipeline.options import AudioDecoder, PipelineOptions
from poc.speech.base import InvalidSpeechRequest, SpeechChunk, SpeechError, SpeechProvider

log = logging.getLogger(__name__)

T = TypeVar("T")

ABANDONED_POLL_S = 0.01  # how often a new synthesis looks whether an abandoned one is done


class _PermanentFailure(Exception):
    """This message's speech cannot be had; the text says why (one line, no secrets)."""


class SpeechStage:
    def __init__(
        self,
        jobs: JobQueue,
        compositor: Compositor,
        speech: SpeechProvider,
        decode_audio: AudioDecoder,
        options: PipelineOptions,
        metrics: Metrics,
        dead_letter: Callable[[Job, str], None],
        output_down: Callable[[], bool] = lambda: False,
    ) -> None:
        """`output_down`: True while the stream's output is in an outage (the RTMP server is
        away): no new message is started then, so none plays to nobody and is acked as played."""
        self._jobs = jobs
        self._output_down = output_down
        self._compositor = compositor
        self._speech = speech
        self._decode_audio = decode_audio
        self._options = options
        self._metrics = metrics
        self._dead_letter = dead_letter
        self._limiter = anyio.CapacityLimiter(1)  # one synthesis at a time
        # Held by the thread while it speaks. On asyncio an abandoned call gives the limiter back
        # at once while its thread goes on, so this is what says it still runs (see _in_thread).
        self._speaking = threading.Lock()
        self._spoken: dict[Job, list[SpeechChunk]] = {}  # complete speech kept across re-plans
        jobs.when_settled(self.forget)

    def forget(self, job: Job) -> None:
        """Drop the job's kept speech (it has settled)."""
        self._spoken.pop(job, None)

    async def run(self, send: ObjectSendStream[StageLink]) -> None:
        """Take jobs in order and send their speech, until cancelled (a re-plan or the end)."""
        async with send:
            while True:
                job = await self._jobs.take(self._has_room)
                expired = job.expiry_reason(time.time())
                if expired is not None:  # it waited too long (a backlog, a stop, an outage)
                    self._dead_letter(job, expired)
                    continue
                sent = 0
                try:
                    async for chunk in self._speak(job):
                        if len(chunk.audio) == 0:
                            continue  # nothing to hear or to animate
                        if sent == 0:
                            job.speech_ready_at = job.speech_ready_at or time.monotonic()
                            self._metrics.latency.labels(stage="speech_ready").observe(
                                job.speech_ready_at - job.received_at
                            )
                        sent += 1
                        await send.send(SpeechPart(job, chunk))
                    if sent == 0:
                        # An empty segment would end as played with nothing said: refuse it.
                        raise _PermanentFailure(_no_audio(job))
                    await send.send(SpeechEnd(job))
                except _PermanentFailure as failure:
                    if sent:
                        await send.send(SpeechFailed(job, str(failure)))
                    else:
                        self._dead_letter(job, str(failure))

    def _has_room(self) -> bool:
        """Less speech than the ahead budget is scheduled from the frame on air onwards, and
        the output is up (in an outage the messages wait in the queue, unplayed)."""
        if self._output_down():
            return False
        fps = self._compositor.fps
        ahead = self._compositor.schedule.frames_ahead(self._compositor.frame)
        return ahead < self._options.ahead_seconds * fps

    async def _speak(self, job: Job) -> AsyncIterator[SpeechChunk]:
        """The job's speech, chunk by chunk, from what was kept after a re-plan."""
        if job in self._spoken:
            for chunk in self._spoken[job]:
                yield chunk
            return
        chunks: list[SpeechChunk] = []
        message = job.message
        if message.type == "audio":
            audio = await self._in_thread(self._decode, message)
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
                message.audio_bytes(), message.format, self._compositor.sample_rate, self._options.max_audio_seconds
            )
        except ValueError as error:  # InvalidAudio is a ValueError
            raise _PermanentFailure(f"audio: {error}") from None
        except Exception as error:
            # MemoryError from a hostile message, or a decoder bug: escaping would take the
            # station down, and the unsettled message would come back and do it again.
            log.exception("decoding an audio message crashed")
            raise _PermanentFailure(f"audio decoder error: {describe_error(error)}") from None

    async def _synthesize(self, message) -> AsyncIterator[SpeechChunk]:
        try:
            stream = await self._in_thread(self._start_speech, message)
            while True:
                chunk = await self._in_thread(_next_or_none, stream)
                if chunk is None:
                    return
                yield chunk
        except InvalidSpeechRequest as error:
            raise _PermanentFailure(f"speech: {error}") from None
        except SpeechError as error:
            raise _PermanentFailure(f"speech failed: {error}") from None
        except Exception as error:  # a bug or an engine crash must not take the stream down
            log.exception("TTS crashed")
            raise _PermanentFailure(f"speech engine error: {describe_error(error)}") from None

    def _start_speech(self, message) -> Iterator[SpeechChunk]:
        self._speech.check_voice(message.voice, message.language)
        return iter(self._speech.synthesize_stream(message.data, message.voice, message.language))

    async def _in_thread(self, function: Callable[..., T], *args: object) -> T:
        # Abandoned on cancel: a re-plan must not wait for a sentence being synthesised. But a
        # new call waits here until an abandoned one is done, rather than start a thread of its
        # own: each re-plan in a burst (urgent messages, interrupts) would add one more sentence
        # nobody hears in front of the one wanted (piper speaks one at a time, for all stations).
        while self._speaking.locked():
            await anyio.sleep(ABANDONED_POLL_S)
        return await anyio.to_thread.run_sync(
            self._while_speaking, function, args, limiter=self._limiter, abandon_on_cancel=True
        )

    def _while_speaking(self, function: Callable[..., T], args: tuple[object, ...]) -> T:
        with self._speaking:
            return function(*args)


def _next_or_none(iterator: Iterator[SpeechChunk]) -> SpeechChunk | None:
    return next(iterator, None)


def _no_audio(job: Job) -> str:
    if job.message.type == "audio":
        return "audio: the message decoded to no samples"
    return "speech: the voice produced no audio for this text"
