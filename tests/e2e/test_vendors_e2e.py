"""An API voice and a hosted face API end to end: RabbitMQ in, the real RTMP stream read back.

The vendors are poc's simulators (poc/simulators), started in the test process and reached by
the real service through the settings a user would write, only the endpoint changed. The
voice's signal is known sample for sample (simulators/voice.py `speak`), so its loudness
envelope can be found in the stream's AAC audio; the face vendor's video carries a moving
magenta mark (simulators/faces.py), so its frames can be found in the stream's picture.
"""

from __future__ import annotations

import json
import re
import time
import uuid

import cv2
import numpy as np
import pytest
from support import amqp
from support.stream import decode_audio, probe, speech_spans, start_recording
from support.vendor_checks import decode_video_bgr, locate, metric

from poc.paths import DEFAULT_AVATAR
from poc.simulators.faces import MARK_SIZE, MARK_STEP, VIDEO_FPS, find_mark
from poc.simulators.registry import SIMULATOR_KEY, start_face_simulator, start_voice_simulator

pytestmark = pytest.mark.integration

RATE = 44100
WIDTH, HEIGHT = 640, 360
SMALL = {"RTMP_RESOLUTION": f"{WIDTH}x{HEIGHT}"}  # low CPU: the picture's size is not under test
TEXT = "Hello from the vendor. This voice came over the wire."
WINDOW = 0.02  # seconds per envelope value
# The simulator draws its video on the default avatar; the service fits it into WIDTH x HEIGHT
# like its own avatar (face/avatar.py fit_to_canvas): scaled to fit, centred.
SOURCE_H, SOURCE = cv2.imread(str(DEFAULT_AVATAR)).shape[:2]
SCALE = min(WIDTH / SOURCE, HEIGHT / SOURCE_H)
LEFT = (WIDTH - round(SOURCE * SCALE)) // 2
MARK_ROWS = 72  # the mark is drawn near the top of the vendor's frame (y 24..56 before scaling)
MARK_CYCLE = (SOURCE - MARK_SIZE) // MARK_STEP  # source frames before the mark wraps to the left


def wait_until(condition, timeout: float, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


@pytest.fixture
def launch(start_service, service_env):
    """Start the service with extra settings and wait until it is on air and consuming."""
    started = []

    def go(**env: str):
        service = start_service(**SMALL, **env)
        started.append(service)
        service.wait_for_log(r"on air: streaming", timeout=60)
        service.wait_for_log(r"connected to RabbitMQ", timeout=30)
        return service

    yield go
    for service in started:
        service.stop()
    queue = service_env["RABBITMQ_QUEUE"]
    amqp.delete(queue, queue + ".control", queue + ".dlq")


@pytest.fixture
def elevenlabs():
    server, env = start_voice_simulator("elevenlabs")
    yield server, env
    server.stop()


@pytest.fixture
def did():
    server, env = start_face_simulator("d-id")
    yield server, env
    server.stop()


@pytest.fixture(params=["d-id", "tavus", "hedra", "synthesia"])
def face_vendor(request):
    server, env = start_face_simulator(request.param)
    yield server, env
    server.stop()


def record_from_now(service_env, seconds: float, path):
    """Start reading the stream back; returns once the recorder is writing (so what is published
    next is in the file, after some idle stream)."""
    recording = start_recording(service_env["RTMP_URL"], seconds, path)
    wait_until(lambda: path.exists() and path.stat().st_size > 20_000, timeout=20, step=0.1)
    return recording


def metrics_text(service) -> str:
    status, body = service.get("/metrics")
    assert status == 200
    return body.decode()


def tts_texts(sim) -> list[str]:
    return [r.json()["text"] for r in sim.requests if "/text-to-speech/" in r.path]


def heard_spans(path) -> tuple[np.ndarray, list[tuple[float, float]], float]:
    """The stream's audio, its speech spans (file seconds from the first sample) and the time of
    its first sample on the recording's clock."""
    audio = decode_audio(path)
    return audio, speech_spans(audio, RATE, window=WINDOW), probe(path).audio_start


# -- an API voice --------------------------------------------------------------------------------


def test_the_vendors_voice_is_heard_on_the_stream(launch, elevenlabs, service_env, tmp_path):
    sim, env = elevenlabs
    service = launch(**env)
    queue = service_env["RABBITMQ_QUEUE"]
    path = tmp_path / "voice.mkv"
    recording = record_from_now(service_env, 10, path)
    amqp.publish(queue, {"type": "text", "data": TEXT, "id": "vendor-voice"})
    service.wait_for_log(r"message vendor-voice: played", timeout=60)
    recording.wait(timeout=60)

    texts = tts_texts(sim)
    assert texts == ["Hello from the vendor.", "This voice came over the wire."]  # one per sentence
    assert all(r.headers.get("xi-api-key") == SIMULATOR_KEY for r in sim.requests)
    expected = np.concatenate([sim.sent_audio(text, RATE) for text in texts])
    heard, spans, _ = heard_spans(path)
    assert spans, "no speech in the read-back stream"
    at, score = locate(heard, expected, RATE, WINDOW)
    expected_spans = speech_spans(expected, RATE, window=WINDOW)
    print(f"envelope correlation {score:.4f} at {at:.3f} s; heard {spans[0][0]:.2f}-{spans[-1][1]:.2f} s")
    # Each character's loudness, pause and sentence break in place: the vendor's own audio.
    assert score > 0.99, score  # (one character more in the text scores 0.989)
    # The match is where the speech is, not some other stretch of the stream.
    assert abs(at + expected_spans[0][0] - spans[0][0]) <= 0.1
    heard_s = spans[-1][1] - spans[0][0]
    sent_s = expected_spans[-1][1] - expected_spans[0][0]
    assert abs(heard_s - sent_s) <= 0.2, (heard_s, sent_s)

    wait_until(lambda: amqp.message_count(queue) == 0, timeout=10)
    page = metrics_text(service)
    assert metric(page, "poc_tts_requests_total", provider="elevenlabs") == 2  # no retries
    assert metric(page, "poc_tts_first_audio_seconds_count", provider="elevenlabs") == 2
    assert SIMULATOR_KEY not in service.log_text() and SIMULATOR_KEY not in page


def test_a_rejected_key_falls_back_to_piper_and_the_message_plays(launch, elevenlabs, service_env, tmp_path):
    sim, env = elevenlabs
    wrong = f"xi-wrong-{uuid.uuid4().hex}"
    service = launch(**{**env, "TTS_API_KEY": wrong, "TTS_FALLBACK_PROVIDER": "piper"})
    queue = service_env["RABBITMQ_QUEUE"]
    path = tmp_path / "fallback.mkv"
    recording = record_from_now(service_env, 10, path)
    amqp.publish(queue, {"type": "text", "data": TEXT, "id": "fell-back"})
    service.wait_for_log(r"message fell-back: played", timeout=60)
    recording.wait(timeout=60)

    _, spans, _ = heard_spans(path)
    assert spans and spans[-1][1] - spans[0][0] > 1.5, spans  # both sentences, in piper's voice
    # One rejected request: then elevenlabs is marked down and the second sentence goes to piper.
    assert len(tts_texts(sim)) == 1
    log = service.log_text()
    assert len(re.findall(r"ElevenLabs rejected the API key \(HTTP 401\); speaking with piper", log)) == 1
    wait_until(lambda: amqp.message_count(queue) == 0, timeout=10)
    page = metrics_text(service)
    assert metric(page, "poc_tts_failures_total", provider="elevenlabs", kind="auth") == 1
    assert wrong not in log and wrong not in page


def test_a_rejected_key_without_fallback_dead_letters_and_the_stream_goes_on(launch, elevenlabs, service_env):
    sim, env = elevenlabs
    wrong = f"xi-wrong-{uuid.uuid4().hex}"
    service = launch(**{**env, "TTS_API_KEY": wrong})
    queue = service_env["RABBITMQ_QUEUE"]
    body = {"type": "text", "data": TEXT, "id": "no-voice"}
    amqp.publish(queue, body)
    service.wait_for_log(r"message no-voice: dead_lettered", timeout=60)
    [(dead, headers)] = wait_until(lambda: amqp.drain(queue + ".dlq"), timeout=10)
    assert json.loads(dead) == body
    reason = headers["x-error"]
    reason = reason.decode() if isinstance(reason, bytes) else str(reason)
    assert "elevenlabs" in reason.lower() and "401" in reason, reason
    assert wrong not in reason and "\n" not in reason
    assert len(tts_texts(sim)) == 1  # a rejected key is not retried
    wait_until(lambda: amqp.message_count(queue) == 0, timeout=10)
    status, _ = service.get("/healthz")
    assert status == 200
    assert wrong not in service.log_text()


# -- a hosted face API -------------------------------------------------------------------------


def marks_in(path) -> tuple[np.ndarray, list[tuple[float, float, int] | None]]:
    """Each video frame's time on the recording's clock and the vendor's mark in it, if any."""
    frames = decode_video_bgr(path, WIDTH, MARK_ROWS)
    pts = np.array(sorted(probe(path).video_pts))[: len(frames)]
    return pts, [find_mark(frame) for frame in frames[: len(pts)]]


def source_index(x_centre: float) -> float:
    """Which source frame of the vendor's video shows the mark at this stream x (mod MARK_CYCLE)."""
    return ((x_centre - LEFT) / SCALE - MARK_SIZE / 2) / MARK_STEP


@pytest.mark.slow
def test_the_face_vendors_frames_are_seen_while_our_audio_plays(launch, face_vendor, service_env, tmp_path):
    sim, env = face_vendor
    service = launch(**env)
    queue = service_env["RABBITMQ_QUEUE"]
    path = tmp_path / "face.mkv"
    recording = record_from_now(service_env, 20, path)
    amqp.publish(queue, {"type": "text", "data": "Hello there, this face was made by the vendor.", "id": "vendor-face"})
    service.wait_for_log(r"message vendor-face: played", timeout=90)
    recording.wait(timeout=90)
    assert [job.plan for job in sim.jobs.values()] == ["ok"]

    _, spans, audio_start = heard_spans(path)
    assert spans, "no speech in the read-back stream"
    start, end = audio_start + spans[0][0], audio_start + spans[-1][1]
    pts, marks = marks_in(path)
    assert pts[-1] > end + 1.0, "the recording ended before the speech did"
    seen = np.array([m is not None for m in marks])
    assert seen.any(), "the vendor's frames never reached the stream"
    print(f"speech {start:.2f}-{end:.2f} s; mark seen {pts[seen].min():.2f}-{pts[seen].max():.2f} s")
    before = pts < start - 0.3
    during = (pts > start + 0.2) & (pts < end - 0.2)
    after = pts > end + 1.0
    assert before.sum() > 30 and during.sum() > 30 and after.sum() > 5
    assert not seen[before].any(), "the vendor's frames were on air before the speech"
    assert seen[during].mean() > 0.95, seen[during].mean()  # the vendor's face all through our audio
    assert not seen[after].any(), "the vendor's frames stayed after the speech"

    # The vendor's video plays, in order and in time with our audio: the mark's source frame
    # advances at the vendor's 25 fps from the moment the speech starts.
    times = pts[during]
    index = np.unwrap([source_index(m[0]) for m, s in zip(marks, during) if s], period=MARK_CYCLE)
    video_start = float(np.median(times - index / VIDEO_FPS))
    drift = index - (times - video_start) * VIDEO_FPS
    print(f"vendor frame 0 on air at {video_start:.3f} s; index error p95 {np.percentile(np.abs(drift), 95):.2f}")
    assert np.percentile(np.abs(drift), 95) <= 1.5
    assert start - 0.4 <= video_start <= start + 0.1, (video_start, start)

    wait_until(lambda: amqp.message_count(queue) == 0, timeout=10)
    assert SIMULATOR_KEY not in service.log_text()


@pytest.mark.slow
def test_a_failed_face_job_still_speaks_with_the_local_engine(launch, did, service_env, tmp_path):
    sim, env = did
    sim.job_plan = "fail"
    service = launch(**env)
    queue = service_env["RABBITMQ_QUEUE"]
    path = tmp_path / "failed-face.mkv"
    recording = record_from_now(service_env, 16, path)
    amqp.publish(queue, {"type": "text", "data": "The vendor failed, but you still hear me.", "id": "face-failed"})
    service.wait_for_log(r"message face-failed: played", timeout=90)
    recording.wait(timeout=90)
    assert [job.plan for job in sim.jobs.values()] == ["fail"]

    _, spans, audio_start = heard_spans(path)
    assert spans and spans[-1][1] - spans[0][0] > 1.5, spans
    pts, marks = marks_in(path)
    assert pts[-1] > audio_start + spans[-1][1], "the recording ended before the speech did"
    assert not any(m is not None for m in marks)  # no vendor frame reached the stream
    assert re.search(r"the local engine speaks this message", service.log_text())
    wait_until(lambda: amqp.message_count(queue) == 0, timeout=10)
    page = metrics_text(service)
    assert metric(page, "poc_face_api_failures_total", vendor="d-id", kind="failed") == 1
    assert SIMULATOR_KEY not in service.log_text() and SIMULATOR_KEY not in page
