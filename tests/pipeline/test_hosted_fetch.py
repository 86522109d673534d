"""A hosted face is asked once per job, for the job's whole life: a re-plan while the vendor
renders waits for the same request, the request is cancelled only when the job settles, and a
video that comes after that is deleted (each request costs money; each video is a temp file).

The vendor is D-ID's simulator with the real client; its talks work until the test lets them
finish. The speech and the local engine are the property tests' stand-ins: job N's audio is the
constant N, so the uploads and the air tell the jobs apart."""

from __future__ import annotations

import math
import tempfile
import threading
from pathlib import Path
from typing import Callable

import anyio
import numpy as np
import pytest

from poc.face.avatar import Avatar
from poc.face.hosted import HostedFaceClient, create_client
from poc.face.hosted_video import HostedFace
from poc.jobs import Job, Outcome
from poc.metrics import Metrics
from poc.paths import DEFAULT_AVATAR
from poc.pipeline import Pipeline
from poc.simulators.did import DIdServer
from poc.simulators.faces import find_mark, wav_samples
from poc.speech.resilient import ResilientSpeech

from test_pipeline_properties import FPS, RATE, FakeEngine, FakeSpeech, FakeText, build_pipeline

WIDTH, HEIGHT = 320, 180
POLL = 0.02  # the client's poll interval
FOREVER = 10**9  # polls before a talk finishes: it works until the test releases it
WAIT_S = 20.0

pytestmark = pytest.mark.slow  # seconds of CPU: the full suite runs these, the fast lane does not


@pytest.fixture
def did():
    sim = DIdServer(polls_to_finish=FOREVER).start()
    yield sim
    sim.stop()


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the client downloads vendors' videos (tempfile's folder), empty at first."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def videos(folder: Path) -> list[Path]:
    return sorted(folder.glob("poc-d-id-*.mp4"))


def release(sim: DIdServer) -> None:
    """Every talk so far finishes at its next poll, and later ones after two (call it once the
    talks to release exist: one being created meanwhile could miss both)."""
    sim.polls_to_finish = 2
    for talk in list(sim.jobs.values()):
        talk.polls_to_finish = 0


def talks_by_job(sim: DIdServer) -> list[int]:
    """The job number of each audio the vendor was sent (one upload per talk), sorted."""
    return sorted(int(wav_samples(data)[0].max()) for data in list(sim.audios.values()))


def polls(sim: DIdServer) -> int:
    return sum(1 for r in list(sim.requests) if r.method == "GET" and r.path.startswith("/talks/"))


class HeldAnswer:
    """D-ID's real client, whose answer is held once the video is downloaded: the moment when a
    job settles just as the vendor's answer comes back, too late for the cancel to stop it."""

    def __init__(self, client: HostedFaceClient) -> None:
        self._client = client
        self.name = client.name
        self.downloaded = threading.Event()
        self.answer = threading.Event()
        self.answered = threading.Event()

    def render(self, audio: np.ndarray, sample_rate: int, *, deadline: float,
               cancelled: threading.Event | None = None) -> Path:  # fmt: skip
        try:
            path = self._client.render(audio, sample_rate, deadline=deadline, cancelled=cancelled)
            self.downloaded.set()
            self.answer.wait(WAIT_S)
            return path
        finally:
            self.answered.set()

    def close(self) -> None:
        self._client.close()


def grey_avatar() -> Avatar:
    frame = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    frame.setflags(write=False)
    return Avatar(frames=(frame,), source=Path("grey"), source_digest="grey")


def make_pipeline(client: HostedFaceClient, metrics: Metrics) -> Pipeline:
    hosted = HostedFace(client, timeout_s=WAIT_S, width=WIDTH, height=HEIGHT, fps=FPS, metrics=metrics)
    return build_pipeline(ResilientSpeech([FakeSpeech()]), FakeEngine(), metrics, avatar=grey_avatar(), hosted=hosted)


def did_client(sim: DIdServer) -> HostedFaceClient:
    return create_client("d-id", sim.api_url, sim.api_key, None, poll_interval=POLL, avatar_image=DEFAULT_AVATAR)


def job(number: int, words: str) -> Job:
    return Job(message=FakeText(f"{number} {words}."), id=str(number))


class Air:
    """The stream, ticked on the clock: per frame, the job whose audio plays (0: none) and
    whether the vendor's mark is in the picture."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self.frames: list[tuple[int, bool]] = []

    async def run(self) -> None:
        for frame in range(FPS * 120):
            picture, samples = self._pipeline.compositor.render(frame)
            playing = int(samples.max()) if len(samples) else 0
            self.frames.append((playing, find_mark(picture) is not None))
            await anyio.sleep(1 / FPS / 4)

    def of(self, number: int) -> list[bool]:
        """Whether each of job `number`'s frames showed the vendor's video."""
        return [marked for playing, marked in self.frames if playing == number]


async def eventually(condition: Callable[[], bool], timeout: float = WAIT_S) -> bool:
    with anyio.move_on_after(timeout):
        while not condition():
            await anyio.sleep(0.01)
    return condition()


async def replan_while_rendering(did: DIdServer, metrics: Metrics) -> tuple[Job, Job, Air]:
    """Job 7 waits for its video; an urgent job 8 re-plans the pipeline and is asked for; then
    the vendor finishes both, and both play."""
    client = did_client(did)
    pipeline = make_pipeline(client, metrics)
    air = Air(pipeline)
    seven, eight = job(7, "One two three four five six seven eight"), job(8, "One two three four five")
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)
        tg.start_soon(air.run)
        pipeline.submit(seven)
        assert await eventually(lambda: len(did.jobs) == 1 and polls(did) >= 2), "job 7's talk never started"
        pipeline.submit(eight, urgent=True)
        assert await eventually(lambda: len(did.jobs) == 2), "the urgent job was never asked for"
        release(did)
        settled = lambda: seven.is_settled and eight.is_settled and pipeline.chart.state_id == "idle"  # noqa: E731
        assert await eventually(settled), "the jobs did not play"
        tg.cancel_scope.cancel()
    client.close()
    return seven, eight, air


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_replan_while_the_vendor_renders_waits_for_the_same_request(did, temp_dir, backend) -> None:
    metrics = Metrics()
    seven, eight, air = anyio.run(replan_while_rendering, did, metrics, backend=backend)
    assert talks_by_job(did) == [7, 8], "the vendor was asked again for a job a re-plan took back"
    assert metrics.registry.get_sample_value("poc_face_api_requests_total", {"vendor": "d-id"}) == 2
    assert seven.outcome is Outcome.PLAYED and eight.outcome is Outcome.PLAYED
    for number, words in ((7, 9), (8, 6)):  # the job's number is a word too
        shown = air.of(number)
        assert len(shown) == math.ceil(int(RATE * 0.1 * words) * FPS / RATE)  # all its speech, once
        # Its second half: past the cross-fade in from the idle avatar or the previous job.
        assert all(shown[len(shown) // 2 :]), f"job {number} did not play with the vendor's video"
    assert not videos(temp_dir), "a played job's video was not deleted"


async def settle_while_rendering(did: DIdServer, how: str) -> tuple[Job, Job, int, int]:
    """Job 7 waits for its video; an urgent job 8 re-plans the pipeline, is rendered and plays
    (job 7 is then due again, its video still rendering); then job 7 settles. Returns the jobs
    and the vendor's polls just after the settle and a while later."""
    client = did_client(did)
    pipeline = make_pipeline(client, Metrics())
    seven, eight = job(7, "One two three"), job(8, "Now")
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)
        tg.start_soon(Air(pipeline).run)
        pipeline.submit(seven)
        assert await eventually(lambda: len(did.jobs) == 1 and polls(did) >= 2), "job 7's talk never started"
        pipeline.submit(eight, urgent=True)
        assert await eventually(lambda: len(did.jobs) == 2), "the urgent job was never asked for"
        list(did.jobs.values())[-1].polls_to_finish = 0  # job 8's talk (job 7's is still the first)
        assert await eventually(lambda: eight.is_settled), "the urgent job did not play"
        await anyio.sleep(5 * POLL)  # time for job 7's turn to ask (again, if it would)
        if how == "clear":
            pipeline.clear()
        else:
            await pipeline.shutdown(1.0)
        await anyio.sleep(10 * POLL)  # a poll already on its way still lands
        after = polls(did)
        await anyio.sleep(20 * POLL)
        later = polls(did)
        tg.cancel_scope.cancel()
    client.close()
    return seven, eight, after, later


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize(("how", "outcome"), [("clear", Outcome.DROPPED), ("shutdown", Outcome.REQUEUED)])
def test_a_job_settled_while_the_vendor_renders_cancels_its_one_request(did, temp_dir, backend, how, outcome) -> None:
    seven, eight, after, later = anyio.run(settle_while_rendering, did, how, backend=backend)
    assert eight.outcome is Outcome.PLAYED and seven.outcome is outcome
    assert talks_by_job(did) == [7, 8], "the vendor was asked again for a job a re-plan took back"
    assert later == after, "the vendor is still polled for a settled job"
    assert not videos(temp_dir), "a vendor's video was left in the temp folder"


async def settle_as_the_video_comes(did: DIdServer, temp_dir: Path) -> tuple[Job, list[Path]]:
    """Job 7's video is downloaded; the job is cleared before the client's answer reaches the
    stage; returns the job and the videos left once the answer came."""
    held = HeldAnswer(did_client(did))
    pipeline = make_pipeline(held, Metrics())
    seven = job(7, "One two three")
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)
        tg.start_soon(Air(pipeline).run)
        pipeline.submit(seven)
        assert await eventually(lambda: len(did.jobs) == 1), "job 7's talk never started"
        release(did)
        assert await eventually(held.downloaded.is_set), "the video was never downloaded"
        assert len(videos(temp_dir)) == 1
        pipeline.clear()
        held.answer.set()
        assert await eventually(held.answered.is_set)
        await eventually(lambda: not videos(temp_dir), timeout=2.0)
        tg.cancel_scope.cancel()
    held.close()
    return seven, videos(temp_dir)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_video_that_comes_after_its_job_settled_is_deleted(did, temp_dir, backend) -> None:
    seven, left = anyio.run(settle_as_the_video_comes, did, temp_dir, backend=backend)
    assert seven.outcome is Outcome.DROPPED
    assert not left, "the vendor's video was left in the temp folder"


async def play_without_a_fetch_thread(did: DIdServer) -> tuple[Job, Air]:
    client = did_client(did)
    pipeline = make_pipeline(client, Metrics())
    air = Air(pipeline)
    seven = job(7, "One two three")
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)
        tg.start_soon(air.run)
        pipeline.submit(seven)
        assert await eventually(lambda: seven.is_settled and pipeline.chart.state_id == "idle"), "it never played"
        tg.cancel_scope.cancel()
    client.close()
    return seven, air


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_when_no_thread_can_be_started_for_the_vendor_the_local_face_speaks(did, monkeypatch, backend) -> None:
    """A process at its thread limit: the job is not left waiting for a request that never
    began; the local engine speaks it at once."""
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        if "-video-" in thread.name:
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    seven, air = anyio.run(play_without_a_fetch_thread, did, backend=backend)
    assert seven.outcome is Outcome.PLAYED
    assert air.of(7) and not any(air.of(7)), "the vendor's video showed, but it was never asked for"
    assert not did.jobs
