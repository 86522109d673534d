"""The speech stage never hands on a message that says nothing, and never lets an audio message
take the station down: speech with no audio, audio that decodes to no samples and a decoder that
crashes are each dead-lettered with a clear reason, and the stage goes on to the next message."""

from __future__ import annotations

import base64
import io
import logging
import wave
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import anyio
import numpy as np
import pytest

from poc.face.avatar import Avatar
from poc.jobs import Job, Outcome
from poc.media.compositor import Compositor
from poc.media.timeline import Schedule
from poc.messages import AudioMessage, TextMessage
from poc.metrics import Metrics
from poc.pipeline import JobQueue, PipelineOptions
from poc.pipeline.link import SpeechEnd, SpeechFailed, SpeechPart, StageLink
from poc.pipeline.speech_stage import SpeechStage
from poc.speech.base import SpeechChunk
from poc.speech.decode import decode_audio
from poc.speech.piper import PiperProvider
from poc.speech.resilient import ResilientSpeech
from poc.statechart import StreamChart

RATE, FPS = 8000, 25
Decoder = Callable[[bytes, str, int, float], np.ndarray]


class ScriptedSpeech:
    """Speaks each text as the chunks scripted for it (audio of the given lengths); counts asks."""

    name = "scripted"

    def __init__(self, script: dict[str, Sequence[int]]) -> None:
        self.script = script
        self.asked: list[str] = []

    def warm_up(self) -> None:
        pass

    def check_voice(self, voice: str | None, language: str | None) -> None:
        pass

    def synthesize_stream(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> Iterator[SpeechChunk]:
        self.asked.append(text)
        for length in self.script[text]:
            yield SpeechChunk(audio=np.full(length, 100, np.int16))


class Station:
    """A speech stage wired as the pipeline wires it; `dead` holds (job id, reason) in order."""

    def __init__(self, speech: object, decode: Decoder = decode_audio) -> None:
        metrics = Metrics()
        self.jobs = JobQueue(metrics)
        avatar = Avatar(frames=(np.zeros((8, 8, 3), np.uint8),), source=Path("x"), source_digest="x")
        compositor = Compositor(avatar, StreamChart(has_pending=self.jobs.has_pending), Schedule(), RATE, FPS, metrics)
        self.dead: list[tuple[str, str]] = []
        options = PipelineOptions()
        self.stage = SpeechStage(self.jobs, compositor, speech, decode, options, metrics, self._dead_letter)  # type: ignore[arg-type]

    def _dead_letter(self, job: Job, reason: str) -> None:
        self.dead.append((job.id, reason))
        self.jobs.settle(job, Outcome.DEAD_LETTERED, reason)

    async def run(self, jobs: Sequence[Job], queue: bool = True) -> list[StageLink]:
        """Queue the jobs (unless they are queued already), run the stage until each is
        dead-lettered or its speech ended."""
        for job in jobs if queue else ():
            self.jobs.add(job)
        send, receive = anyio.create_memory_object_stream(100)
        links: list[StageLink] = []

        def done(job: Job) -> bool:
            ended = (link.job for link in links if isinstance(link, (SpeechEnd, SpeechFailed)))
            return job.is_settled or job in ended

        async with anyio.create_task_group() as tg:
            tg.start_soon(self.stage.run, send)
            with anyio.fail_after(60):
                while not all(done(job) for job in jobs):
                    with anyio.move_on_after(0.05):
                        links.append(await receive.receive())
            tg.cancel_scope.cancel()
        return links


def text_job(text: str, job_id: str) -> Job:
    return Job(message=TextMessage(type="text", data=text), id=job_id)


def audio_job(wav_bytes: bytes, job_id: str) -> Job:
    data = base64.b64encode(wav_bytes).decode()
    return Job(message=AudioMessage(type="audio", format="wav", data=data), id=job_id)


def wav_file(rate: int, frames: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.full(frames, 1000, np.int16).tobytes())
    return buffer.getvalue()


def kinds(links: list[StageLink], job: Job) -> list[str]:
    return [type(link).__name__ for link in links if link.job is job]


@pytest.fixture(scope="module")
def piper() -> Iterator[ResilientSpeech]:
    provider = PiperProvider(RATE)
    provider.warm_up()
    yield ResilientSpeech([provider], retries=0)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("text", ["___", "_", "\U0001d7d8"])  # word characters piper says nothing for
def test_text_the_voice_says_nothing_for_is_dead_lettered_not_played(
    piper: ResilientSpeech, text: str, backend: str
) -> None:
    station = Station(piper)
    silent, spoken = text_job(text, "silent"), text_job("Hello there.", "spoken")
    links = anyio.run(station.run, [silent, spoken], backend=backend)
    assert kinds(links, silent) == []  # no SpeechEnd: nothing for the compositor to "play"
    assert station.dead == [("silent", "speech: the voice produced no audio for this text")]
    assert silent.outcome is Outcome.DEAD_LETTERED
    assert kinds(links, spoken)[-1] == "SpeechEnd" and "SpeechPart" in kinds(links, spoken)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_empty_chunks_are_not_sent_and_speech_made_only_of_them_is_dead_lettered(backend: str) -> None:
    speech = ScriptedSpeech({"nothing": [0, 0], "late words": [0, 80]})
    station = Station(speech)
    nothing, late = text_job("nothing", "nothing"), text_job("late words", "late")
    links = anyio.run(station.run, [nothing, late], backend=backend)
    assert kinds(links, nothing) == []
    assert station.dead == [("nothing", "speech: the voice produced no audio for this text")]
    parts = [link for link in links if isinstance(link, SpeechPart)]
    assert [len(link.chunk.audio) for link in parts] == [80]
    assert kinds(links, late) == ["SpeechPart", "SpeechEnd"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_kept_speech_is_sent_again_after_a_replan_without_asking_the_voice_twice(backend: str) -> None:
    speech = ScriptedSpeech({"words": [0, 40, 60]})
    station = Station(speech)
    job = text_job("words", "j")

    async def twice() -> list[StageLink]:
        first = await station.run([job])
        station.jobs.take_back()  # a re-plan: the prepared job goes back to the queue
        return first + await station.run([job], queue=False)

    links = anyio.run(twice, backend=backend)
    assert kinds(links, job) == ["SpeechPart", "SpeechPart", "SpeechEnd"] * 2
    assert speech.asked == ["words"] and station.dead == []


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_audio_that_decodes_to_no_samples_is_dead_lettered(backend: str) -> None:
    # One frame at 48 kHz is less than one sample at the stream's 8 kHz.
    assert len(decode_audio(wav_file(48000, 1), "wav", RATE, 60.0)) == 0
    station = Station(ScriptedSpeech({}))
    empty, audible = audio_job(wav_file(48000, 1), "empty"), audio_job(wav_file(RATE, RATE // 2), "audible")
    links = anyio.run(station.run, [empty, audible], backend=backend)
    assert kinds(links, empty) == []
    assert station.dead == [("empty", "audio: the message decoded to no samples")]
    assert kinds(links, audible) == ["SpeechPart", "SpeechEnd"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (MemoryError(), "audio decoder error: MemoryError"),
        (RuntimeError("bad\nblock"), "audio decoder error: RuntimeError: bad block"),
    ],
)
def test_a_crashing_decoder_dead_letters_the_message_and_the_stage_goes_on(
    error: Exception, reason: str, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    def decode(data: bytes, fmt: str, rate: int, max_seconds: float) -> np.ndarray:
        if len(data) < 100:
            raise error
        return decode_audio(data, fmt, rate, max_seconds)

    station = Station(ScriptedSpeech({}), decode)
    hostile, audible = audio_job(wav_file(RATE, 1), "hostile"), audio_job(wav_file(RATE, RATE // 2), "audible")
    with caplog.at_level(logging.ERROR, logger="poc.pipeline.speech_stage"):
        links = anyio.run(station.run, [hostile, audible], backend=backend)
    assert station.dead == [("hostile", reason)]
    assert kinds(links, audible) == ["SpeechPart", "SpeechEnd"]
    crashes = [record for record in caplog.records if record.exc_info]
    assert len(crashes) == 1 and crashes[0].exc_info[0] is type(error)  # logged with its traceback


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_an_invalid_audio_message_is_still_dead_lettered_quietly(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    station = Station(ScriptedSpeech({}))
    job = Job(message=AudioMessage(type="audio", format="wav", data=base64.b64encode(b"not a wav").decode()), id="bad")
    with caplog.at_level(logging.ERROR, logger="poc.pipeline.speech_stage"):
        anyio.run(station.run, [job], backend=backend)
    assert station.dead == [("bad", "audio: not a WAV file (no RIFF/WAVE header)")]
    assert not [record for record in caplog.records if record.exc_info]  # a bad message is no bug
