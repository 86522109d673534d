"""Random interleavings of messages, interrupts, clears, engine faults and slow engines:
every message ends exactly once, the clock never stops, and a settled message never plays."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

import anyio
import attrs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from support.lanes import examples

from poc.face.avatar import Avatar
from poc.face.base import FacePatch, RenderedFrame, SpeechSlot
from poc.jobs import Job, Outcome
from poc.face.hosted_video import HostedFace
from poc.media.audio import samples_in_frame
from poc.media.compositor import Compositor
from poc.media.timeline import Schedule
from poc.metrics import Metrics
from poc.pipeline import JobQueue, Pipeline, PipelineOptions
from poc.speech.base import InvalidSpeechRequest, SpeechChunk, SpeechError, SpeechProvider
from poc.speech.resilient import ResilientSpeech
from poc.statechart import StreamChart

RATE, FPS = 8000, 25


@attrs.frozen
class FakeText:
    data: str
    voice: str | None = None
    language: str | None = None
    type: str = "text"


class FakeSpeech:
    """Speaks '<marker> <words>' as constant audio = marker, 0.1 s per word, one chunk per
    sentence. 'FAIL' always fails (transient), 'FLAKY' fails once, 'BADVOICE' is permanent.
    A sentence with 'TINY' is one sample long (less than a frame), one with 'SILENT' has none."""

    name = "fake"

    def __init__(self) -> None:
        self.flaky_seen: set[str] = set()
        self.lock = threading.Lock()

    def warm_up(self) -> None:
        pass

    def check_voice(self, voice, language) -> None:
        if voice == "BADVOICE":
            raise InvalidSpeechRequest("unknown voice 'BADVOICE'")

    def synthesize_stream(self, text: str, voice=None, language=None) -> Iterator[SpeechChunk]:
        marker = int(text.split()[0])
        for sentence in text.split(".")[:-1] or [text]:
            with self.lock:
                if "FLAKY" in sentence and text not in self.flaky_seen:
                    self.flaky_seen.add(text)
                    raise SpeechError("flaky engine")
            if "FAIL" in sentence:
                raise SpeechError("engine down")
            words = max(1, len(sentence.split()))
            length = 0 if "SILENT" in sentence else 1 if "TINY" in sentence else int(RATE * 0.1 * words)
            yield SpeechChunk(audio=np.full(length, marker, dtype=np.int16))

    def synthesize(self, text, voice=None, language=None):
        raise NotImplementedError


class FakeUtterance:
    def __init__(self, engine: "FakeEngine") -> None:
        self.engine = engine
        self.failures = 0

    def hear(self, slots: Sequence[SpeechSlot]) -> None:
        pass  # draws each frame from its own slot: nothing to take ahead

    def feed(self, slots: Sequence[SpeechSlot]) -> list[RenderedFrame]:
        if self.engine.delay:
            time.sleep(self.engine.delay * len(slots))
        if self.engine.broken:
            raise RuntimeError("engine fault")
        return [RenderedFrame(s.index, FacePatch(0, 0, np.full((4, 4, 3), 255, np.uint8))) for s in slots]

    def finish(self) -> list[RenderedFrame]:
        return []


class FakeEngine:
    name = "fake"
    lead_seconds = 0.05
    lookahead_seconds = 0.0
    improves_with_later_audio = False
    batch_size = 4

    def __init__(self) -> None:
        self.delay = 0.0
        self.broken = False

    def warm_up(self) -> None:
        pass

    def start_utterance(self) -> FakeUtterance:
        return FakeUtterance(self)

    def close(self) -> None:
        pass


def fake_decode(data, fmt, rate, max_seconds):
    raise ValueError("not used")


def make_avatar() -> Avatar:
    return Avatar(frames=(np.zeros((8, 8, 3), np.uint8),), source=Path("x"), source_digest="x")


def build_pipeline(
    speech: SpeechProvider,
    engine: FakeEngine,
    metrics: Metrics | None = None,
    *,
    avatar: Avatar | None = None,
    hosted: HostedFace | None = None,
) -> Pipeline:
    """A pipeline wired as app.py wires it (job queue, statechart and compositor built here and
    handed in), at the tests' rate and frame rate with a 3-frame mouth blend."""
    metrics = metrics or Metrics()
    jobs = JobQueue(metrics)
    chart = StreamChart(has_pending=jobs.has_pending)
    compositor = Compositor(avatar or make_avatar(), chart, Schedule(), RATE, FPS, metrics, blend_frames=3,
                            on_started=jobs.started, on_settled=jobs.settled)  # fmt: skip
    return Pipeline(jobs, compositor, speech, fake_decode, PipelineOptions(), metrics, engine=engine, hosted=hosted)


action = st.one_of(
    st.tuples(st.just("say"), st.sampled_from(["Hi.", "One two three. Four five.", "FLAKY words here.",
                                               "FAIL now.", "Good words. FAIL now.", "long " * 12 + ".",
                                               "TINY.", "SILENT."]),
              st.sampled_from([None, None, None, "BADVOICE"]), st.booleans()),
    st.tuples(st.just("interrupt")),
    st.tuples(st.just("clear")),
    st.tuples(st.just("ticks"), st.integers(1, 40)),
    st.tuples(st.just("slow"), st.sampled_from([0.0, 0.0, 0.004])),
    st.tuples(st.just("broken"), st.booleans()),
    st.tuples(st.just("stop")),
    st.tuples(st.just("start")),
)  # fmt: skip

CUT_FRAMES = FPS // 5  # an interrupt cuts the speech on air within 200 ms of stream time


async def scenario(actions, late: bool = False) -> None:
    """`late`: the engine's faces improve with later speech, so the face stage holds frames
    back until they are due (as it does for MuseTalk). `stop` hands every held message back as
    the `stop` control does (the control lane waits for it); no message arrives until `start`."""
    speech, engine = ResilientSpeech([FakeSpeech()], retries=1, sleep=lambda s: None), FakeEngine()
    engine.improves_with_later_audio = late
    pipeline = build_pipeline(speech, engine)
    compositor, chart = pipeline.compositor, pipeline.chart
    transitions: list[tuple[str, str]] = []

    class Listener:
        def after_transition(self, source, target) -> None:
            transitions.append((source.id, target.id))

    chart.add_listener(Listener())
    jobs: dict[int, Job] = {}
    urgent: set[int] = set()
    settled_at: dict[int, int] = {}
    first_heard: dict[int, int] = {}
    heard_runs: list[int] = []  # the job heard, once per run of frames: a job twice here played twice
    cut_by: dict[int, int] = {}  # job -> the last frame it may be heard on after an interrupt
    ahead_of: dict[int, set[int]] = {}  # urgent job -> jobs held then, which it must play before
    stopped = False
    frame = 0

    async def tick() -> None:
        nonlocal frame
        picture, audio = compositor.render(frame)
        assert picture.shape == (8, 8, 3)
        assert len(audio) == samples_in_frame(frame, RATE, FPS)  # the clock never stops
        marker = int(audio.max())
        if marker:
            assert marker in jobs
            assert marker not in settled_at or settled_at[marker] >= frame, "a settled job played"
            assert frame <= cut_by.get(marker, frame), f"job {marker} heard after its interrupt"
            first_heard.setdefault(marker, frame)
            if not heard_runs or heard_runs[-1] != marker:
                assert marker not in heard_runs, f"job {marker} played twice, or between others"
                heard_runs.append(marker)
        head = pipeline.schedule.head()
        if head is not None and head.playing:  # something is on air: the chart says so
            assert chart.state_id in ("transitioning", "talking"), f"{chart.state_id} while job {head.job.id} plays"
        elif chart.talking.is_active:
            raise AssertionError("talking with nothing on air")
        for number, job in jobs.items():
            if job.is_settled and number not in settled_at:
                settled_at[number] = frame
        frame += 1
        await anyio.sleep(0.0005)

    def on_air() -> int | None:
        head = pipeline.schedule.head()
        return int(head.job.id) if head is not None and head.playing and head.stop_at is None else None

    def interrupt() -> None:
        number = on_air()
        pipeline.interrupt()
        if number is not None:
            cut_by[number] = compositor.frame + CUT_FRAMES

    async def hand_back() -> None:
        handed = [job for job in jobs.values() if not job.is_settled]
        done = anyio.Event()

        async def stop() -> None:
            await pipeline.hand_back("stopped")
            done.set()

        tg.start_soon(stop)
        for _ in range(FPS * 5):  # the control lane waits for the stop's blend out
            if done.is_set():
                break
            await tick()
        assert done.is_set(), "a stop never finished"
        assert all(job.is_settled for job in handed), "a stop kept a message"
        assert pipeline.schedule.head() is None, "a stop left speech on air"

    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)
        for step in actions:
            kind = step[0]
            if kind == "say" and not stopped:
                _, text, voice, is_urgent = step
                number = len(jobs) + 1
                # Every sentence carries the job's number: the voice is asked one sentence at a time.
                marked = " ".join(f"{number} {part.strip()}." for part in text.split(".") if part.strip())
                job = Job(message=FakeText(marked, voice=voice), id=str(number))
                jobs[number] = job
                if is_urgent:
                    urgent.add(number)
                    ahead_of[number] = {n for n, j in jobs.items() if j.on_air_at is None and n != number}
                    interrupt_of = on_air()
                    pipeline.submit(job, urgent=True)
                    if interrupt_of is not None:
                        cut_by[interrupt_of] = compositor.frame + CUT_FRAMES
                else:
                    pipeline.submit(job)
            elif kind == "interrupt":
                interrupt()
            elif kind == "clear":
                pipeline.clear()
            elif kind == "ticks":
                for _ in range(step[1]):
                    await tick()
            elif kind == "slow":
                engine.delay = step[1]
            elif kind == "broken":
                engine.broken = step[1]
            elif kind == "stop" and not stopped:
                await hand_back()
                stopped = True
            elif kind == "start":
                stopped = False
        engine.delay, engine.broken = 0.0, False
        for _ in range(FPS * 120):
            if all(job.is_settled for job in jobs.values()) and not pipeline.schedule.head():
                break
            await tick()
        for _ in range(FPS):  # the blend out completes and the chart rests
            await tick()
        tg.cancel_scope.cancel()

    for number, job in jobs.items():
        assert job.is_settled, f"job {number} never settled"
        assert job.settled.is_set()
    for source, target in transitions:
        if target == "talking":
            assert source == "transitioning"
    assert chart.state_id == "idle"
    assert not pipeline.queued_jobs
    dead = {n for n, j in jobs.items() if j.outcome is Outcome.DEAD_LETTERED}
    for n in dead:
        assert jobs[n].reason
    for n, job in jobs.items():
        text = job.message.data
        if job.outcome is Outcome.PLAYED:
            assert "FAIL" not in text and "SILENT" not in text and job.message.voice != "BADVOICE"
            assert n in first_heard, f"job {n} settled as played but was never heard"
    # Strictly in order: a message plays after every one published before it, except that an
    # urgent one plays before every message held when it came.
    heard = sorted(first_heard, key=first_heard.get)
    plain = [n for n in heard if n not in urgent]
    assert plain == sorted(plain), f"messages played out of order: {heard}"
    for number, held in ahead_of.items():
        for other in held & first_heard.keys():
            if number in first_heard:
                assert first_heard[number] < first_heard[other], f"urgent {number} played after {other}"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=st.lists(action, max_size=14), late=st.booleans())
def test_every_message_ends_exactly_once_and_the_clock_never_stops(backend, actions, late):
    anyio.run(scenario, actions, late, backend=backend)


class RecoveringUtterance(FakeUtterance):
    """Like MuseTalk on a failed batch: returns idle faces and counts the fault itself."""

    def feed(self, slots: Sequence[SpeechSlot]) -> list[RenderedFrame]:
        if slots:
            self.failures += 1
        return [RenderedFrame(s.index, None) for s in slots]


class RecoveringEngine(FakeEngine):
    def __init__(self) -> None:
        super().__init__()
        self.utterances: list[RecoveringUtterance] = []

    def start_utterance(self) -> FakeUtterance:
        self.utterances.append(RecoveringUtterance(self))
        return self.utterances[-1]


async def play_one(engine: RecoveringEngine) -> tuple[Job, Metrics, int]:
    """Play one message through a pipeline driven tick by tick; returns the job, the metrics and
    how many batches the utterances recovered from."""
    metrics = Metrics()
    pipeline = build_pipeline(ResilientSpeech([FakeSpeech()]), engine, metrics)
    job = Job(message=FakeText("1 One two three. 1 Four five."), id="1")
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)
        pipeline.submit(job)
        for frame in range(FPS * 60):
            if job.is_settled:
                break
            pipeline.compositor.render(frame)
            await anyio.sleep(0.0005)
        tg.cancel_scope.cancel()
    return job, metrics, sum(u.failures for u in engine.utterances)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_faults_an_engine_recovers_from_itself_are_counted_and_the_words_still_play(backend) -> None:
    job, metrics, recovered = anyio.run(play_one, RecoveringEngine(), backend=backend)
    assert job.outcome is Outcome.PLAYED
    assert recovered > 0
    assert metrics.registry.get_sample_value("poc_engine_errors_total") == recovered
