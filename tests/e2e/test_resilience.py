"""Never off air, nothing lost: an RTMP server crash, a broker connection drop, a killed
service and a SIGTERM, each against the real nginx, RabbitMQ and ffmpeg."""

import json
import re
import signal
import subprocess
import time
import uuid

import pytest
from support import amqp
from support.polling import holds_for, wait_until
from support.processes import RtmpServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LONG = "This message is long on purpose, so that it is still playing when something breaks. " * 3


def readable(url: str) -> bool:
    result = subprocess.run(
        ["ffmpeg", "-v", "quiet", "-rw_timeout", "2000000", "-i", url, "-map", "0:v", "-frames:v", "1",
         "-f", "null", "-"],
        capture_output=True, timeout=30,
    )  # fmt: skip
    return result.returncode == 0


def health(service) -> int:
    try:
        return service.get("/healthz", timeout=3)[0]
    except OSError:
        return 0


def wait_for(condition, timeout: float, step: float = 0.2) -> float:
    """Poll until `condition` holds; how long it took."""
    started = time.monotonic()
    wait_until(condition, timeout, step)
    return time.monotonic() - started


def metric(service, name: str) -> float:
    """One unlabelled sample of the service's /metrics (0 when it is not there yet)."""
    try:
        _, body = service.get("/metrics", timeout=3)
    except OSError:
        return 0.0
    found = re.search(rb"^" + re.escape(name.encode()) + rb" (\S+)", body, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.fixture
def queue(rabbitmq):
    name = f"poc_test_{uuid.uuid4().hex[:10]}"
    yield name
    amqp.delete(name, name + ".control", name + ".dlq")


def test_rtmp_server_crash_mid_speech_is_survived(tmp_path, start_service, queue):
    server = RtmpServer(tmp_path / "nginx")
    server.start()
    try:
        url = f"{server.base_url}/k{uuid.uuid4().hex[:12]}"
        service = start_service(RTMP_URL=url, RABBITMQ_QUEUE=queue)
        service.wait_for_log(r"connected to RabbitMQ", timeout=60)
        amqp.publish(queue, {"type": "text", "data": LONG, "id": "through-the-crash"})
        service.wait_for_log(r"through-the-crash: on air", timeout=60)
        assert health(service) == 200
        server.kill()
        wait_for(lambda: health(service) == 503, timeout=10)  # healthz tells the truth
        # Keep the server down until the writer has failed to restart it a few times, so the
        # outage below is one outage made of several retries.
        restarts = metric(service, "poc_writer_restarts_total")
        wait_for(lambda: metric(service, "poc_writer_restarts_total") >= restarts + 3, timeout=30)
        server.start()
        back_after = wait_for(lambda: readable(url), timeout=30)
        print(f"stream readable {back_after:.1f} s after the RTMP server came back")
        wait_for(lambda: health(service) == 200, timeout=15)
        assert service.process.poll() is None  # the service never exited
        service.wait_for_log(r"through-the-crash: played", timeout=90)
        log = service.log_text()
        assert len(re.findall(r"through-the-crash: played", log)) == 1
        assert len(re.findall(r"RTMP output to \S+ lost", log)) == 1  # once per outage
        assert "is back after" in log
        service.stop()  # a message still held unacked would now go back to the queue
        assert amqp.message_count(queue) == 0  # acked exactly once, nothing left behind
    finally:
        server.stop()


def test_broker_connection_drop_is_survived(start_service, queue):
    service = start_service(RABBITMQ_QUEUE=queue)
    service.wait_for_log(r"connected to RabbitMQ", timeout=60)
    subprocess.run(["rabbitmqctl", "close_all_connections", "poc resilience test"],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    wait_for(lambda: metric(service, "poc_amqp_reconnects") >= 1, timeout=30)
    amqp.publish(queue, {"type": "text", "data": "Back again.", "id": "after-the-drop"})
    service.wait_for_log(r"after-the-drop: played", timeout=60)
    assert service.process.poll() is None
    _, body = service.get("/metrics")
    reconnects = re.search(rb"^poc_amqp_reconnects (\S+)", body, re.MULTILINE)
    assert reconnects and float(reconnects.group(1)) >= 1


def test_killed_service_replays_the_message_it_was_playing(start_service, queue):
    first = start_service(RABBITMQ_QUEUE=queue)
    first.wait_for_log(r"connected to RabbitMQ", timeout=60)
    amqp.publish(queue, {"type": "text", "data": LONG, "id": "killed-mid-way"})
    amqp.publish(queue, {"type": "text", "data": "Second in line.", "id": "second-in-line"})
    first.wait_for_log(r"killed-mid-way: on air", timeout=60)
    first.signal(signal.SIGKILL)
    first.wait(timeout=10)
    second = start_service(RABBITMQ_QUEUE=queue)
    second.wait_for_log(r"killed-mid-way: played", timeout=120)
    second.wait_for_log(r"second-in-line: played", timeout=60)
    log = second.log_text()
    assert log.index("killed-mid-way: on air") < log.index("second-in-line: on air")
    second.stop()  # a message still held unacked would now go back to the queue
    assert amqp.message_count(queue) == 0


def test_sigterm_exits_within_5_s_and_returns_unplayed_messages(start_service, queue):
    service = start_service(RABBITMQ_QUEUE=queue)
    service.wait_for_log(r"connected to RabbitMQ", timeout=60)
    for i in range(3):
        amqp.publish(queue, {"type": "text", "data": LONG, "id": f"queued-{i}"})
    service.wait_for_log(r"queued-0: on air", timeout=60)
    wait_for(lambda: amqp.message_count(queue) == 0, timeout=10)  # all three held by the service
    started = time.monotonic()
    service.signal(signal.SIGTERM)
    code = service.wait(timeout=15)
    took = time.monotonic() - started
    assert code == 0, service.log_text()[-2000:]
    assert took < 5, f"took {took:.1f} s to stop"
    # the one on air had more than the deadline left: it was cut and requeued with the others
    assert amqp.message_count(queue) == 3
    bodies = [json.loads(body)["id"] for body, _ in amqp.drain(queue)]
    assert sorted(bodies) == ["queued-0", "queued-1", "queued-2"]


def test_broker_down_at_start_up_keeps_the_stream_and_consumes_once_it_is_there(start_service, queue):
    from support.processes import free_port
    from support.tcp_proxy import TcpProxy

    proxy = TcpProxy(free_port(), 5672)  # nothing listens there yet: the broker is "down"
    service = start_service(RABBITMQ_QUEUE=queue, RABBITMQ_PORT=str(proxy.listen_port))
    service.wait_for_log(r"on air: streaming", timeout=60)
    service.wait_for_log(r"RabbitMQ at \S+ not available", timeout=30)
    # The broker stays down for 3 s (6 retries at 0.5 s); idle keeps streaming all along. (A
    # listener counting the retries instead would change the error they meet from one try to
    # the next: refused is the only failure that is the same every time.)
    holds_for(lambda: health(service) == 200, seconds=3)
    assert len(re.findall(r"not available", service.log_text())) == 1  # said once, not per retry
    amqp.publish(queue, {"type": "text", "data": "Now the broker is here.", "id": "late-broker"})
    proxy.open()
    try:
        service.wait_for_log(r"connected to RabbitMQ", timeout=30)
        service.wait_for_log(r"late-broker: played", timeout=60)
    finally:
        proxy.close()
