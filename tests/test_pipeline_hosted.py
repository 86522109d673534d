"""A hosted face API through the pipeline: the vendor's frames with our audio on our clock, and
the local engine speaking the words whenever the vendor fails.

The vendor is D-ID's simulator (and Synthesia's, whose minutes-long renders make "late" its usual
failure) with the real client; the speech and the local engine are the
property tests' controllable stand-ins, so what is seen on each frame can be told apart: the
vendor's frames carry its moving magenta mark, the local engine's are white 4x4 patches."""

from __future__ import annotations

import math
from pathlib import Path

import anyio
import numpy as np
import pytest

from poc.face.avatar import Avatar
from poc.face.hosted import create_client
from poc.face.hosted_video import HostedFace
from poc.jobs import Job, Outcome
from poc.metrics import Metrics
from poc.paths import DEFAULT_AVATAR
from poc.simulators.did import DIdServer
from poc.simulators.faces import FaceVendorServer, find_mark
from poc.simulators.synthesia import SynthesiaServer
from poc.speech.resilient import ResilientSpeech

from test_pipeline_properties import FPS, FakeEngine, FakeSpeech, FakeText, build_pipeline

WIDTH, HEIGHT = 320, 180


def grey_avatar() -> Avatar:
    frame = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    frame.setflags(write=False)
    return Avatar(frames=(frame,), source=Path("grey"), source_digest="grey")


def client_for(sim: FaceVendorServer):
    if isinstance(sim, SynthesiaServer):  # a stock avatar by id: Synthesia takes no image
        return create_client("synthesia", sim.api_url, sim.api_key, "anna_costume1_cameraA", poll_interval=0.02)
    return create_client(
        "d-id", sim.api_url, sim.api_key, None, poll_interval=0.02, avatar_image=DEFAULT_AVATAR
    )


async def play(sim: FaceVendorServer, timeout_s: float = 20.0) -> tuple[Job, Metrics, list, list]:
    """Play one message; returns the job, the metrics, and per frame (picture, audio)."""
    metrics = Metrics()
    client = client_for(sim)
    hosted = HostedFace(client, timeout_s=timeout_s, width=WIDTH, height=HEIGHT, fps=FPS, metrics=metrics)
    pipeline = build_pipeline(ResilientSpeech([FakeSpeech()]), FakeEngine(), metrics, avatar=grey_avatar(), hosted=hosted)
    job = Job(message=FakeText("7 One two three four. 7 Five six seven."), id="7")
    pictures, audio = [], []
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)
        pipeline.submit(job)
        for frame in range(FPS * 60):
            if job.is_settled and pipeline.chart.state_id == "idle":
                break
            picture, samples = pipeline.compositor.render(frame)
            pictures.append(picture.copy())
            audio.append(samples.copy())
            await anyio.sleep(1 / FPS / 4)
        tg.cancel_scope.cancel()
    client.close()
    return job, metrics, pictures, audio


@pytest.fixture
def did():
    sim = DIdServer(polls_to_finish=2).start()
    yield sim
    sim.stop()


@pytest.fixture(params=["d-id", "synthesia"])
def vendor(request):
    sim = (DIdServer if request.param == "d-id" else SynthesiaServer)(polls_to_finish=2).start()
    yield request.param, sim
    sim.stop()


def speaking(audio: list) -> list[int]:
    return [i for i, samples in enumerate(audio) if len(samples) and int(samples.max()) == 7]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.slow  # seconds of CPU: the full suite runs it, the fast lane does not
def test_the_vendor_s_frames_play_with_our_audio_on_our_clock(vendor, backend) -> None:
    name, sim = vendor
    job, metrics, pictures, audio = anyio.run(play, sim, backend=backend)
    assert job.outcome is Outcome.PLAYED
    talking = speaking(audio)
    assert len(talking) == math.ceil(0.1 * 9 * FPS)  # 9 words, markers included  # every sample of our speech, once
    assert talking == list(range(talking[0], talking[0] + len(talking)))  # no gap in the audio
    marked = [i for i, picture in enumerate(pictures) if find_mark(picture) is not None]
    middle = talking[len(talking) // 4 : -len(talking) // 4]
    assert set(middle) <= set(marked), "the vendor's frames are not on air while it speaks"
    assert not [i for i in marked if i < talking[0] - 1 or i > talking[-1] + FPS // 2]
    # The mark moves: these are the video's successive frames, not one held picture.
    xs = {round(find_mark(pictures[i])[0]) for i in middle}
    assert len(xs) > len(middle) // 2
    assert metrics.registry.get_sample_value("poc_face_api_requests_total", {"vendor": name}) == 1


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize(("plan", "kind"), [("fail", "failed"), ("never", "timeout"), ("bad_video", "bad_video")])
@pytest.mark.slow  # seconds of CPU: the full suite runs it, the fast lane does not
def test_when_the_vendor_fails_the_local_engine_speaks_the_words(did, backend, plan, kind) -> None:
    did.job_plan = plan
    job, metrics, pictures, audio = anyio.run(play, did, 1.5, backend=backend)
    assert job.outcome is Outcome.PLAYED
    assert len(speaking(audio)) == math.ceil(0.1 * 9 * FPS)
    assert not any(find_mark(picture) is not None for picture in pictures)
    white = [i for i, picture in enumerate(pictures) if picture[:4, :4].min() == 255]
    assert white, "the local engine's faces were not shown"
    assert metrics.registry.get_sample_value("poc_face_api_failures_total", {"vendor": "d-id", "kind": kind}) == 1


@pytest.mark.slow  # waits out the vendor's timeout
def test_a_synthesia_video_later_than_the_timeout_leaves_the_words_to_the_local_engine() -> None:
    """Synthesia renders for minutes: past TALKING_FACE_API_TIMEOUT_SECONDS the message is
    spoken by the local engine, and nothing of the late video reaches the picture."""
    sim = SynthesiaServer().start()
    sim.job_plan = "never"
    try:
        job, metrics, pictures, audio = anyio.run(play, sim, 1.5)
    finally:
        sim.stop()
    assert job.outcome is Outcome.PLAYED
    assert len(speaking(audio)) == math.ceil(0.1 * 9 * FPS)
    assert not any(find_mark(picture) is not None for picture in pictures)
    assert [i for i, picture in enumerate(pictures) if picture[:4, :4].min() == 255], "no local face shown"
    failures = {"vendor": "synthesia", "kind": "timeout"}
    assert metrics.registry.get_sample_value("poc_face_api_failures_total", failures) == 1
