"""A face vendor that is down costs each message up to TALKING_FACE_API_TIMEOUT_SECONDS on the
idle avatar before the local engine speaks: with a dead vendor every message of a live stream
waited two minutes. After FAILURES_BEFORE_REST vendor failures in a row it rests: the local
engine speaks at once, without a request; after the rest one message asks it again. Real
D-ID client against the local D-ID simulator; only the clock is the test's."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from poc.face.hosted import create_client
from poc.face.hosted_video import FAILURES_BEFORE_REST, REST_S, HostedFace
from poc.metrics import Metrics
from poc.paths import DEFAULT_AVATAR
from poc.simulators.did import DIdServer

from .conftest import POLL, RATE, api_requests, speech


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def did() -> Iterator[DIdServer]:
    sim = DIdServer().start()
    yield sim
    sim.stop()


def hosted_face(sim: DIdServer, clock: Clock, api_key: str | None = None) -> HostedFace:
    client = create_client("d-id", sim.api_url, api_key or sim.api_key, None, poll_interval=POLL,
                           avatar_image=DEFAULT_AVATAR)  # fmt: skip
    return HostedFace(client, timeout_s=20, width=640, height=360, fps=25, metrics=Metrics(), clock=clock)


def test_a_vendor_down_rests_then_is_asked_again_and_its_videos_come_back(did: DIdServer, caplog) -> None:
    clock = Clock()
    face = hosted_face(did, clock)
    caplog.set_level(logging.INFO, logger="poc.face.hosted_video")
    did.faults.extend([503] * FAILURES_BEFORE_REST)  # each message's first call: the vendor is down
    for _ in range(FAILURES_BEFORE_REST):
        assert face.video_for(speech(0.5), RATE) is None
    asked = len(api_requests(did))
    assert face.resting_for() == pytest.approx(REST_S[0])

    started = time.monotonic()
    assert face.video_for(speech(0.5), RATE) is None  # resting: the local engine speaks at once
    assert time.monotonic() - started < 0.05
    assert len(api_requests(did)) == asked  # and nothing was asked of the vendor

    clock.now += REST_S[0]  # the rest is over: the next message asks again, and it is back
    path = face.video_for(speech(0.5), RATE)
    assert path is not None and face.resting_for() is None
    path.unlink()
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("failed 2 times in a row" in line for line in said) == 1, said
    assert said[-1] == "d-id answered again: its videos are used again"


def test_a_failed_return_rests_twice_as_long(did: DIdServer) -> None:
    clock = Clock()
    face = hosted_face(did, clock)
    did.faults.extend([503] * (FAILURES_BEFORE_REST + 1))
    for _ in range(FAILURES_BEFORE_REST):
        face.video_for(speech(0.5), RATE)
    clock.now += REST_S[0]
    assert face.video_for(speech(0.5), RATE) is None  # one try after the rest, failed
    assert face.resting_for() == pytest.approx(REST_S[1])


def test_one_job_s_failure_is_not_the_vendor_down(did: DIdServer) -> None:
    """A job the vendor refused or a video that does not decode says nothing of the next job."""
    clock = Clock()
    face = hosted_face(did, clock)
    did.job_plan = "fail"
    for _ in range(FAILURES_BEFORE_REST + 1):
        assert face.video_for(speech(0.5), RATE) is None
    assert face.resting_for() is None


def test_a_rejected_key_rests_too(did: DIdServer) -> None:
    """Every message would be refused the same way until the operator fixes the key."""
    face = hosted_face(did, Clock(), api_key="wrong-key")
    for _ in range(FAILURES_BEFORE_REST):
        assert face.video_for(speech(0.5), RATE) is None
    assert face.resting_for() == pytest.approx(REST_S[0])
