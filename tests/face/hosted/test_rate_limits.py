"""A vendor that answers 429 Too Many Requests, with Retry-After.

A 429 means the vendor refused the request without doing it, so any call may be sent again
(even the one that creates a billed job) once the wait it asks for is over: a burst of messages
then still gets the vendor's faces. A wait that ends after the message's deadline is not sat
out: the local engine is to speak now, not after the whole TALKING_FACE_API_TIMEOUT_SECONDS of
idle avatar, and the error says why."""

from __future__ import annotations

import time

import pytest

from poc.face.hosted import HostedFaceError, decode_video
from poc.simulators.faces import VIDEO_FPS

from .conftest import RATE, Vendor, speech

CREATES = {"d-id": 3, "tavus": 1, "hedra": 5, "synthesia": 2}  # calls before the first poll


def test_a_429_on_the_first_call_is_waited_out_and_the_video_comes(vendor: Vendor) -> None:
    vendor.sim.faults.append(429)  # Retry-After: 0
    path = vendor.make().render(speech(0.5), RATE, deadline=time.monotonic() + 30)
    try:
        assert len(decode_video(path, 640, 360, 25)) == round(0.5 * VIDEO_FPS)
    finally:
        path.unlink()
    assert not vendor.sim.faults
    assert len(vendor.sim.jobs) == 1, "one job, not one per attempt"


@pytest.mark.parametrize("where", ["first call", "first poll"])
def test_a_retry_after_past_the_deadline_gives_up_at_once(vendor: Vendor, where: str) -> None:
    vendor.sim.retry_after = "3600"
    before = CREATES[vendor.name] if where == "first poll" else 0
    vendor.sim.faults.extend([None] * before + [429])
    started = time.monotonic()
    with pytest.raises(HostedFaceError) as caught:
        vendor.make().render(speech(0.5), RATE, deadline=started + 10)
    assert time.monotonic() - started < 3, "it sat out the vendor's wait up to the deadline"
    assert caught.value.kind == "unavailable"
    text = str(caught.value)
    assert vendor.name in text and "429" in text and "3600" in text, text
