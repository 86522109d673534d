"""Races between the stream's own events and what arrives upstream: a message that is
dead-lettered while another plays, interrupts and clears at awkward moments. Each test drives a
real pipeline (job queue, speech and face stages, compositor, statechart) frame by frame and
judges it by what goes on air: the picture, the samples, and how each message was settled."""

from __future__ import annotations

import time

import anyio
import numpy as np
import pytest

from poc.jobs import Job, Outcome
from poc.speech.resilient import ResilientSpeech

from test_pipeline_properties import FakeEngine, FakeSpeech, FakeText, build_pipeline


class Station:
    """A pipeline and its clock, driven one frame at a time from the test."""

    def __init__(self, engine: FakeEngine | None = None) -> None:
        self.pipeline = build_pipeline(ResilientSpeech([FakeSpeech()]), engine or FakeEngine())
        self.frame = 0
        self.pictures: list[np.ndarray] = []
        self.markers: list[int] = []  # the job number heard on each frame (0: silence)

    async def tick(self, count: int = 1, pace: float = 0.002) -> None:
        """Render `count` frames, `pace` seconds of wall time apart."""
        for _ in range(count):
            picture, audio = self.pipeline.compositor.render(self.frame)
            self.pictures.append(picture)
            self.markers.append(int(audio.max()))
            self.frame += 1
            await anyio.sleep(pace)

    async def tick_until(self, done, limit: int = 25 * 30, pace: float = 0.002) -> None:
        for _ in range(limit):
            if done():
                return
            await self.tick(pace=pace)
        raise AssertionError("the awaited moment never came")


def mouth_shown(picture: np.ndarray) -> bool:
    """The fake engine's face is a white 4x4 patch at the corner of a black avatar."""
    return bool((picture[:4, :4] == 255).all())


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_message_dead_lettered_while_another_plays_leaves_its_lips_moving(backend: str) -> None:
    async def run() -> tuple[Station, Job, Job, int]:
        station = Station()
        pipeline = station.pipeline
        first = Job(message=FakeText("1 " + "long " * 40 + "."), id="1")  # 4 s of speech
        bad = Job(message=FakeText("2 Hello.", voice="BADVOICE"), id="2")
        async with anyio.create_task_group() as tg:
            await tg.start(pipeline.run)
            pipeline.submit(first)
            await station.tick_until(lambda: pipeline.chart.talking.is_active)
            pipeline.submit(bad)  # the voice is refused while the first message plays
            await station.tick_until(lambda: bad.is_settled)
            settled_at = station.frame
            await station.tick_until(lambda: first.is_settled)
            await station.tick(25)
            tg.cancel_scope.cancel()
        return station, first, bad, settled_at

    station, first, bad, settled_at = anyio.run(run, backend=backend)
    assert bad.outcome is Outcome.DEAD_LETTERED and bad.reason
    assert first.outcome is Outcome.PLAYED
    # While the first message is still heard after the dead-letter, its mouth stays on.
    heard_after = [k for k in range(settled_at, len(station.markers)) if station.markers[k] == 1]
    assert len(heard_after) > 10
    silent_mouth = [k for k in heard_after[:-1] if not mouth_shown(station.pictures[k])]
    assert not silent_mouth, f"{len(silent_mouth)} frames of the first message played without its mouth"
    assert station.pipeline.chart.state_id == "idle"



@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("how", ["interrupt control", "urgent message"])
def test_the_next_message_follows_an_interrupt_at_once_not_after_the_cut_speech(backend: str, how: str) -> None:
    """The stages restart within one frame of an interrupt (the clock ticks every 40 ms here):
    the message after the cut one must be placed after where the cut one stops, not after
    where it would have ended."""

    async def run() -> tuple[Station, int, Job]:
        station = Station()
        pipeline = station.pipeline
        first = Job(message=FakeText("1 " + "long " * 80 + "."), id="1")  # 8 s of speech
        second = Job(message=FakeText("2 Next in line."), id="2")
        async with anyio.create_task_group() as tg:
            await tg.start(pipeline.run)
            pipeline.submit(first)
            pipeline.submit(second)
            await station.tick_until(lambda: pipeline.chart.talking.is_active)
            await station.tick(10)  # the second one's speech is ready and laid behind the first
            cut_at = station.frame
            if how == "interrupt control":
                pipeline.interrupt()
                awaited = second
            else:
                awaited = Job(message=FakeText("3 Breaking news."), id="3")
                pipeline.submit(awaited, urgent=True)
            await anyio.sleep(0.1)  # the stages restart before the clock's next frame
            await station.tick_until(lambda: awaited.is_settled)
            tg.cancel_scope.cancel()
        return station, cut_at, awaited

    station, cut_at, awaited = anyio.run(run, backend=backend)
    number = int(awaited.id)
    assert awaited.outcome is Outcome.PLAYED
    starts = station.markers.index(number)
    # the blend out (3 frames) and the pause between messages (0.3 s) come first, nothing more
    assert starts - cut_at <= 25, f"message {number} began {(starts - cut_at) / 25:.1f} s after the interrupt"


class SlowSpeech(FakeSpeech):
    """FakeSpeech taking `seconds` per sentence, like a local voice on a busy CPU; records how
    many sentences it was asked for and the most it was ever speaking at once."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.sentences = 0
        self.speaking = 0
        self.most_at_once = 0

    def synthesize_stream(self, text: str, voice=None, language=None):
        for chunk in super().synthesize_stream(text, voice, language):
            with self.lock:
                self.sentences += 1
                self.speaking += 1
                self.most_at_once = max(self.most_at_once, self.speaking)
            time.sleep(self.seconds)
            with self.lock:
                self.speaking -= 1
            yield chunk


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_burst_of_urgent_messages_does_not_queue_a_sentence_per_message_that_nobody_hears(backend: str) -> None:
    """Each urgent message re-plans, which abandons the sentence being synthesised; the voice
    must still speak one sentence at a time, and not pile up every abandoned one in front of
    the message that is wanted."""
    speech = SlowSpeech(0.3)

    async def run() -> list[Job]:
        pipeline = build_pipeline(speech, FakeEngine())
        messages = [Job(message=FakeText(f"{n} Item {n}."), id=str(n)) for n in range(1, 6)]
        frame = 0
        async with anyio.create_task_group() as tg:
            await tg.start(pipeline.run)
            pipeline.submit(messages[0])
            await anyio.sleep(0.05)  # its sentence is being synthesised
            for job in messages[1:]:  # four breaking news items, 20 ms apart
                pipeline.submit(job, urgent=True)
                await anyio.sleep(0.02)
            while not all(job.is_settled for job in messages) and frame < 25 * 60:
                pipeline.compositor.render(frame)
                frame += 1
                await anyio.sleep(0.002)
            tg.cancel_scope.cancel()
        return messages

    messages = anyio.run(run, backend=backend)
    assert all(job.outcome is Outcome.PLAYED for job in messages)
    assert speech.most_at_once == 1, f"{speech.most_at_once} sentences were synthesised at once"
    # five messages, and at most the one sentence in progress when the burst came thrown away
    assert speech.sentences <= 6, f"{speech.sentences} sentences synthesised for 5 one-sentence messages"
