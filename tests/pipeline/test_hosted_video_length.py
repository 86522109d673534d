"""A vendor's video that does not last as long as our speech.

Vendors trim or pad now and then. A video much shorter than the speech would leave the vendor's
face frozen on its last frame while the voice goes on (half the message, for a video half as
long): the local engine speaks such a message instead, as for any other broken video. A video
longer than the speech is fine: it is cut where the speech ends.

The vendor is D-ID's simulator with the real client; the speech and the local engine are the
property tests' stand-ins (test_pipeline_hosted.py's `play`)."""

from __future__ import annotations

import math

import anyio
import pytest

from poc.jobs import Outcome
from poc.simulators.did import DIdServer
from poc.simulators.faces import find_mark

from test_pipeline_hosted import play, speaking
from test_pipeline_properties import FPS

pytestmark = pytest.mark.slow  # seconds of CPU: the full suite runs these, the fast lane does not

SPOKEN_FRAMES = math.ceil(0.1 * 9 * FPS)  # play()'s message: 9 words of 0.1 s


@pytest.fixture
def did():
    sim = DIdServer(polls_to_finish=2).start()
    yield sim
    sim.stop()


def failures(metrics, kind: str) -> float:
    return metrics.registry.get_sample_value("poc_face_api_failures_total", {"vendor": "d-id", "kind": kind}) or 0.0


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_video_much_shorter_than_the_speech_leaves_the_words_to_the_local_engine(did, backend) -> None:
    did.job_plan = "short_video"  # half as long as the speech
    job, metrics, pictures, audio = anyio.run(play, did, backend=backend)
    assert job.outcome is Outcome.PLAYED
    assert len(speaking(audio)) == SPOKEN_FRAMES  # every word heard
    assert not any(find_mark(picture) is not None for picture in pictures), "the vendor's short video played"
    assert [i for i, picture in enumerate(pictures) if picture[:4, :4].min() == 255], "no local face shown"
    assert failures(metrics, "bad_video") == 1


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_video_longer_than_the_speech_plays_and_ends_with_it(did, backend) -> None:
    did.job_plan = "long_video"
    job, metrics, pictures, audio = anyio.run(play, did, backend=backend)
    assert job.outcome is Outcome.PLAYED
    talking = speaking(audio)
    assert len(talking) == SPOKEN_FRAMES
    marked = [i for i, picture in enumerate(pictures) if find_mark(picture) is not None]
    middle = talking[len(talking) // 4 : -len(talking) // 4]
    assert set(middle) <= set(marked), "the vendor's frames are not on air while it speaks"
    # Its extra half is not played: the picture goes back to the avatar with the speech.
    assert not [i for i in marked if i > talking[-1] + FPS // 2]
    assert failures(metrics, "bad_video") == 0
