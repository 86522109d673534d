"""`stop` and `start` for the stream itself, through RabbitMQ, against the real nginx and ffmpeg.

Stop: the RTMP stream ends cleanly (ffmpeg finishes on EOF, viewers get no more frames and
nobody new can read it), /healthz says
"stopped by operator" with a 200, nothing is consumed, acked or lost. Start: readable again
within 2 s of the command, and what waited plays. A message cut by a stop plays after the start.
"""

import json
import re
import signal
import subprocess
import threading
import time

import pytest
from support import amqp
from support.stream import ffmpeg

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LONG = "This message is long on purpose, so that it is still playing when the stream stops. " * 3


def readable(url: str, timeout_us: int = 2_000_000) -> bool:
    """One video frame can be read from the RTMP server."""
    result = subprocess.run(
        [ffmpeg(), "-v", "quiet", "-rw_timeout", str(timeout_us), "-i", url, "-map", "0:v",
         "-frames:v", "1", "-f", "null", "-"],
        capture_output=True, timeout=30,
    )  # fmt: skip
    return result.returncode == 0


def wait_for(condition, timeout: float, step: float = 0.1) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(step)
    raise AssertionError(f"not within {timeout} s")


def health(service) -> tuple[int, dict]:
    status, body = service.get("/healthz", timeout=3)
    return status, json.loads(body)


def metric(service, name: str) -> float:
    _, body = service.get("/metrics")
    found = re.search(rf"^{name} (\S+)$", body.decode(), re.MULTILINE)
    assert found, name
    return float(found.group(1))


def control(queue: str, action: str) -> None:
    amqp.publish(queue + ".control", {"type": "control", "action": action})


@pytest.fixture
def service(start_service, service_env):
    service = start_service(LOG_LEVEL="debug")  # the writer says at debug how ffmpeg ended
    service.wait_for_log(r"on air: streaming", timeout=60)
    service.wait_for_log(r"connected to RabbitMQ", timeout=30)
    yield service
    service.stop()
    queue = service_env["RABBITMQ_QUEUE"]
    amqp.delete(queue, queue + ".control", queue + ".dlq")


class Viewer:
    """A player on the stream (as ffplay or a platform's ingest would be): the time it last
    received a frame, read from ffmpeg's progress reports."""

    def __init__(self, url: str) -> None:
        self.frames = 0
        self.last_frame_at = 0.0
        self.process = subprocess.Popen(
            [ffmpeg(), "-v", "error", "-nostats", "-progress", "pipe:1", "-stats_period", "0.1",
             "-rw_timeout", "30000000", "-i", url, "-map", "0:v", "-f", "null", "-"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            if line.startswith("frame="):
                frames = int(line.split("=", 1)[1])
                if frames > self.frames:
                    self.frames, self.last_frame_at = frames, time.monotonic()

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


def test_stop_ends_the_stream_and_start_brings_it_back_within_2_s(service, service_env):
    url, queue = service_env["RTMP_URL"], service_env["RABBITMQ_QUEUE"]
    viewer = Viewer(url)
    try:
        wait_for(lambda: viewer.frames > 30, timeout=15)
        stopped_at = time.monotonic()
        control(queue, "stop")
        control(queue, "stop")  # twice: one stop
        # The viewer stops getting frames (nginx keeps idle players connected, waiting for a
        # publisher, so it does not exit): no new frame for 2 s means the stream has gone.
        wait_for(lambda: time.monotonic() - viewer.last_frame_at > 2, timeout=10)
    finally:
        viewer.close()
    gone_after = viewer.last_frame_at - stopped_at
    print(f"last frame reached the viewer {gone_after:.2f} s after the stop was published")
    assert gone_after < 2

    service.wait_for_log(r"control: stop: off air by operator", timeout=10)
    # A clean close: ffmpeg got EOF on its inputs and finished by itself.
    service.wait_for_log(r"RTMP output to \S+ closed on purpose: ffmpeg exit code 0", timeout=5)
    status, report = health(service)
    assert status == 200 and report["healthy"] is True
    assert report["stream"] == "stopped by operator" and report["on_air"] is False
    assert metric(service, "poc_stream_on_air") == 0
    assert not readable(url)  # nothing is published any more

    amqp.publish(queue, {"type": "text", "data": "I waited for the start.", "id": "while-stopped"})
    wait_for(lambda: amqp.message_count(queue) == 1, timeout=10)  # waits in the queue, unconsumed

    # A player already waiting (nginx holds it until a publisher comes), so what is measured is
    # the service coming back, not a new player's own start-up.
    waiting = Viewer(url)
    try:
        time.sleep(1.0)  # connected and waiting
        assert waiting.frames == 0
        started = time.monotonic()
        control(queue, "start")
        wait_for(lambda: waiting.frames > 0, timeout=10, step=0.02)
        back_after = waiting.last_frame_at - started
    finally:
        waiting.close()
    print(f"frames reached a waiting player {back_after:.2f} s after the start was published")
    assert back_after <= 2.0
    assert readable(url)  # and a new player can join

    service.wait_for_log(r"message while-stopped: played", timeout=60)
    control(queue, "start")  # on air already: a no-op
    status, report = health(service)
    assert status == 200 and report["stream"] == "on air"
    assert metric(service, "poc_stream_on_air") == 1
    assert report["writer_restarts"] == 0  # a stop is not an outage
    service.wait_for_log(r"control: start, but the stream is on air already", timeout=10)
    log = service.log_text()
    assert len(re.findall(r"control: stop:", log)) == 1
    assert len(re.findall(r"control: start:", log)) == 1
    assert not re.search(r"RTMP output to \S+ (lost|not available)", log)  # no outage reported
    assert len(re.findall(r"message while-stopped: played", log)) == 1
    wait_for(lambda: amqp.message_count(queue) == 0, timeout=5)


def test_stop_during_speech_requeues_the_message_and_it_plays_after_start(service, service_env):
    queue = service_env["RABBITMQ_QUEUE"]
    amqp.publish(queue, {"type": "text", "data": LONG, "id": "cut-by-stop"})
    service.wait_for_log(r"message cut-by-stop: on air", timeout=60)
    time.sleep(1)  # well into the message
    control(queue, "stop")
    service.wait_for_log(r"message cut-by-stop: requeued after", timeout=10)
    service.wait_for_log(r"control: stop: off air by operator; 1 held message", timeout=10)
    wait_for(lambda: amqp.message_count(queue) == 1, timeout=10)  # back in the queue, not acked
    assert "cut-by-stop: played" not in service.log_text()

    control(queue, "start")
    service.wait_for_log(r"message cut-by-stop: played", timeout=90)
    log = service.log_text()
    assert len(re.findall(r"message cut-by-stop: on air", log)) == 2
    assert len(re.findall(r"message cut-by-stop: played", log)) == 1
    wait_for(lambda: amqp.message_count(queue) == 0, timeout=5)
    assert amqp.message_count(queue + ".dlq") == 0


def test_sigterm_while_stopped_exits_0_within_5_s_and_keeps_what_waits(service, service_env):
    queue = service_env["RABBITMQ_QUEUE"]
    control(queue, "stop")
    service.wait_for_log(r"control: stop: off air by operator", timeout=10)
    amqp.publish(queue, {"type": "text", "data": "Still here after the restart.", "id": "kept"})
    wait_for(lambda: amqp.message_count(queue) == 1, timeout=10)
    started = time.monotonic()
    service.signal(signal.SIGTERM)
    code = service.wait(timeout=15)
    took = time.monotonic() - started
    assert code == 0, service.log_text()[-2000:]
    assert took < 5, f"took {took:.1f} s to stop"
    [(body, _)] = amqp.drain(queue)
    assert json.loads(body)["id"] == "kept"
