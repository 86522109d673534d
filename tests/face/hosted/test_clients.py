"""The D-ID, Tavus, Hedra and Synthesia clients, each through its vendor's documented flow against a local
server that speaks it (real httpx, real mp4 results made by ffmpeg)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from poc.face.hosted import HostedFaceError, create_client, decode_video
from poc.simulators.faces import VIDEO_FPS, find_mark, wav_samples

from .conftest import RATE, Vendor, api_requests, speech

FPS, WIDTH, HEIGHT = 30, 1280, 720


@pytest.mark.slow  # seconds of CPU: the full suite runs it, the fast lane does not
def test_success_gives_the_vendors_video_of_our_audio_at_stream_rate_and_size(vendor: Vendor) -> None:
    """The video decodes to the speech's duration in stream frames, shows the vendor's frames
    (the simulator's moving mark), the vendor got exactly our audio, every API call carried the
    key, and the result download (a storage link) did not."""
    audio = speech(1.2)
    client = vendor.make()
    path = client.render(audio, RATE, deadline=time.monotonic() + 30)
    try:
        frames = decode_video(path, WIDTH, HEIGHT, FPS)
    finally:
        path.unlink()

    source_frames = round(len(audio) / RATE * VIDEO_FPS)
    assert len(frames) == round(source_frames * FPS / VIDEO_FPS) == 36
    assert all(f.shape == (HEIGHT, WIDTH, 3) and f.dtype == np.uint8 for f in frames)
    marks = [find_mark(f) for f in (frames[0], frames[-1])]
    assert marks[0] is not None and marks[1] is not None, "the vendor's frames are not on screen"
    assert marks[1][0] > marks[0][0] + 100, "the vendor's mark did not move: frames are not its video"

    received, rate = wav_samples(vendor.uploaded())
    assert rate == RATE and len(received) == len(audio)
    if vendor.lossless:
        assert np.array_equal(received, audio)
    else:  # MP3: our speech, not bit for bit
        assert np.corrcoef(received.astype(float), audio.astype(float))[0, 1] > 0.98

    calls = api_requests(vendor.sim)
    assert calls and all(r.headers.get(vendor.key_header) == vendor.key_value(vendor.sim.api_key) for r in calls)
    downloads = [r for r in vendor.sim.requests if r.path.startswith("/results/")]
    assert len(downloads) == 1
    assert vendor.sim.api_key not in str(downloads[0].headers)


def test_a_job_that_fails_raises_failed_naming_the_vendor(vendor: Vendor) -> None:
    vendor.sim.job_plan = "fail"
    with pytest.raises(HostedFaceError) as caught:
        vendor.make().render(speech(0.5), RATE, deadline=time.monotonic() + 30)
    assert caught.value.kind == "failed"
    assert vendor.name in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.slow  # waits out a deadline: the full suite runs it, the fast lane does not
def test_a_job_that_never_finishes_times_out_at_the_deadline(vendor: Vendor) -> None:
    vendor.sim.job_plan = "never"
    started = time.monotonic()
    deadline = started + 1.0
    with pytest.raises(HostedFaceError) as caught:
        vendor.make().render(speech(0.5), RATE, deadline=deadline)
    ended = time.monotonic()
    assert caught.value.kind == "timeout"
    assert deadline <= ended < deadline + 0.5
    assert sum(r.method == "GET" for r in vendor.sim.requests) >= 3, "it gave up without polling"


def test_a_rejected_key_is_auth_and_never_shows_the_key(vendor: Vendor) -> None:
    wrong = "sk-live-WRONG-KEY-0123456789"
    with pytest.raises(HostedFaceError) as caught:
        vendor.make(api_key=wrong).render(speech(0.5), RATE, deadline=time.monotonic() + 30)
    assert caught.value.kind == "auth"
    text = str(caught.value)
    assert vendor.name in text and str(vendor.auth_status) in text
    assert wrong not in text and "WRONG-KEY" not in text


def test_cancel_returns_within_a_poll_step_while_the_vendor_works(vendor: Vendor) -> None:
    vendor.sim.job_plan = "never"
    client = vendor.make()
    cancelled = threading.Event()
    set_at: list[float] = []

    def cancel() -> None:
        set_at.append(time.monotonic())
        cancelled.set()

    timer = threading.Timer(0.4, cancel)
    timer.start()
    with pytest.raises(HostedFaceError) as caught:
        client.render(speech(0.5), RATE, deadline=time.monotonic() + 60, cancelled=cancelled)
    returned = time.monotonic()
    timer.join()
    assert caught.value.kind == "cancelled"
    assert returned - set_at[0] < 0.25


@pytest.mark.parametrize("status", [503, 429])
def test_a_transient_poll_failure_is_waited_out(vendor: Vendor, status: int) -> None:
    """A 503, or a 429 with Retry-After, on one status poll does not lose the job (polls are
    idempotent)."""
    client = vendor.make()
    creates = {"d-id": 3, "tavus": 1, "hedra": 5, "synthesia": 2}[vendor.name]  # avatar upload, audio, job
    # let the create calls through, fail the first poll
    vendor.sim.faults.extend([None] * creates + [status])
    path = client.render(speech(0.5), RATE, deadline=time.monotonic() + 30)
    try:
        assert len(decode_video(path, 640, 360, 25)) == round(0.5 * VIDEO_FPS)
    finally:
        path.unlink()
    assert not vendor.sim.faults


def test_a_failing_create_call_is_unavailable_not_retried(vendor: Vendor) -> None:
    vendor.sim.faults.append(503)
    with pytest.raises(HostedFaceError) as caught:
        vendor.make().render(speech(0.5), RATE, deadline=time.monotonic() + 30)
    assert caught.value.kind == "unavailable"
    assert len(vendor.sim.requests) == 1


def test_bad_video_bytes_are_bad_video(vendor: Vendor) -> None:
    vendor.sim.job_plan = "bad_video"
    path = vendor.make().render(speech(0.5), RATE, deadline=time.monotonic() + 30)
    try:
        with pytest.raises(HostedFaceError) as caught:
            decode_video(path, WIDTH, HEIGHT, FPS)
    finally:
        path.unlink()
    assert caught.value.kind == "bad_video"


def test_an_unreachable_vendor_is_unavailable() -> None:
    client = create_client("hedra", "http://127.0.0.1:9/web-app/public", "k", "asset-1", poll_interval=POLL_FAST)
    try:
        with pytest.raises(HostedFaceError) as caught:
            client.render(speech(0.2), RATE, deadline=time.monotonic() + 5)
    finally:
        client.close()
    assert caught.value.kind == "unavailable" and "hedra" in str(caught.value)


POLL_FAST = 0.02


@pytest.mark.parametrize(
    ("vendor_name", "avatar_id", "setting"),
    [
        ("heygen", "a", "TALKING_FACE_API"),
        ("tavus", None, "TALKING_FACE_AVATAR_ID"),
        ("d-id", None, "TALKING_FACE_AVATAR_ID"),
        ("synthesia", None, "TALKING_FACE_AVATAR_ID"),
        ("synthesia", "", "TALKING_FACE_AVATAR_ID"),
    ],
)
def test_unusable_settings_are_one_line_naming_the_setting(
    vendor_name: str, avatar_id: str | None, setting: str
) -> None:
    with pytest.raises(ValueError) as caught:
        create_client(vendor_name, None, "secret-key", avatar_id, audio_url_for=lambda wav: "x")
    assert str(caught.value).startswith(setting) and "secret-key" not in str(caught.value)


def test_tavus_needs_a_way_to_publish_the_audio() -> None:
    with pytest.raises(ValueError, match="publisher"):
        create_client("tavus", None, "k", "r1")
