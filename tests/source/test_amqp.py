"""The RabbitMQ adapter against the real local broker.

What must hold: nothing a producer publishes is lost or silently dropped. A bad message ends
in the DLQ with its original body and a reason; a good one is acked only once the pipeline
settles it; control is never stuck behind held speech; a wrong password is reported once,
without the password, and never crashes the service.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import subprocess

import aio_pika
import anyio
import pytest
from amqp_fakes import Broker, FakeSink, eventually, eventually_async, running

from poc.jobs import Outcome
from poc.messages import MessageLimits, TextMessage
from poc.source.amqp import (
    AmqpSettings,
    AmqpSource,
    control_queue_name,
    dead_letter_queue_name,
)
from poc.source.publish import build_control, build_text, publish

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

LIMITS = MessageLimits(max_body_bytes=10_000, max_text_chars=50)


def make_source(settings: AmqpSettings, queue: str, sink: FakeSink, prefetch: int = 4) -> AmqpSource:
    return AmqpSource(settings, sink, LIMITS, queue=queue, prefetch=prefetch, reconnect_interval=0.2)


def text(data: str, **extra: object) -> bytes:
    return json.dumps({"type": "text", "data": data, **extra}).encode()


# (body, fragment the x-error must contain); each one breaks a different rule of the contract.
BAD_BODIES = [
    (b"x" * 10_001, "over the 10000-byte limit"),
    (b'{"type": "text", "data": "caf\xe9"}', "not UTF-8"),
    (b"hello there", "not JSON"),
    (b'["text", "hi"]', "JSON array, expected an object"),
    (b'{"type": "text", "data": "hi", "x": ' + b"[" * 20 + b"]" * 20 + b"}", "nested deeper"),
    (b'{"data": "hi"}', "missing 'type'"),
    (b'{"type": "video", "data": "hi"}', 'unknown type "video"'),
    (b'{"type": "text", "data": "   "}', "'data' is empty"),
    (b'{"type": "text"}', "'data' is required"),
    (b'{"type": "text", "data": 42}', "'data' must be a string, got number"),
    (text("hi", interrupt="yes"), "'interrupt' must be true or false"),
    (text("y" * 51), "over the 50-character limit"),
    (b'{"type": "audio", "data": "not base64!", "format": "wav"}', "not valid base64"),
    (b'{"type": "audio", "data": "AAAA", "format": "aac"}', 'unsupported audio format "aac"'),
    (b'{"type": "control", "action": "pause"}', 'unknown control action "pause"'),
]


async def test_every_bad_message_is_dead_lettered_with_its_body_and_reason(
    settings: AmqpSettings, queue: str, sink: FakeSink, broker: Broker
) -> None:
    dlq = dead_letter_queue_name(queue)
    async with running(make_source(settings, queue, sink)):
        for body, _ in BAD_BODIES:
            await publish(settings, body, queue)
        # Speech on the control queue is a mistake too, reported as such.
        await publish(settings, build_text("hello"), queue, control=True)
        await eventually_async(lambda: _has(broker, dlq, len(BAD_BODIES) + 1))
    # Stopped: anything left unacked would now be back in the queue.
    assert await broker.ready(queue) == 0
    assert await broker.ready(control_queue_name(queue)) == 0
    dead = await broker.drain(dlq)
    assert sink.jobs == []
    by_body = {m.body: m for m in dead}
    for body, fragment in BAD_BODIES:
        headers = by_body[body].headers
        assert fragment in str(headers["x-error"])
        assert "\n" not in str(headers["x-error"])
        assert headers["x-original-queue"] == queue
    misplaced = [m for m in dead if m.headers["x-original-queue"] == control_queue_name(queue)]
    assert len(misplaced) == 1
    assert "control queue" in str(misplaced[0].headers["x-error"])


async def _has(broker: Broker, name: str, count: int) -> bool:
    return await broker.ready(name) >= count


async def test_speech_is_acked_only_after_the_pipeline_settles_it(
    settings: AmqpSettings, queue: str, sink: FakeSink, broker: Broker
) -> None:
    msg_id = await publish(settings, build_text("Hello!", voice="joe"), queue)
    async with running(make_source(settings, queue, sink)):
        await eventually(lambda: len(sink.jobs) == 1)
        job = sink.jobs[0]
        assert job.id == msg_id
        assert isinstance(job.message, TextMessage) and job.message.data == "Hello!"
        assert job.message.voice == "joe"
        assert await broker.ready(queue) == 0  # delivered, held unacked
    # The service stopped before the job settled: the broker must still have it.
    await eventually_async(lambda: _has(broker, queue, 1))

    again = FakeSink()
    async with running(make_source(settings, queue, again)):
        await eventually(lambda: len(again.jobs) == 1)
        assert again.jobs[0].id == msg_id
        again.jobs[0].settle(Outcome.PLAYED)
    # Settled PLAYED before the stop: acked, gone for good.
    assert await broker.ready(queue) == 0


async def test_interrupted_and_dropped_jobs_are_acked(
    settings: AmqpSettings, queue: str, sink: FakeSink, broker: Broker
) -> None:
    async with running(make_source(settings, queue, sink)):
        await publish(settings, build_text("one"), queue)
        await publish(settings, build_text("two"), queue)
        await eventually(lambda: len(sink.jobs) == 2)
        sink.jobs[0].settle(Outcome.INTERRUPTED)
        sink.jobs[1].settle(Outcome.DROPPED)
    assert await broker.ready(queue) == 0
    assert await broker.ready(dead_letter_queue_name(queue)) == 0


async def test_dead_lettered_job_moves_to_the_dlq_with_the_pipeline_reason(
    settings: AmqpSettings, queue: str, sink: FakeSink, broker: Broker
) -> None:
    body = build_text("Bonjour", voice="no-such-voice")
    async with running(make_source(settings, queue, sink)):
        msg_id = await publish(settings, body, queue)
        await eventually(lambda: len(sink.jobs) == 1)
        sink.jobs[0].settle(Outcome.DEAD_LETTERED, "unknown voice 'no-such-voice'")
        dlq = dead_letter_queue_name(queue)
        await eventually_async(lambda: _has(broker, dlq, 1))
    assert await broker.ready(queue) == 0
    [dead] = await broker.drain(dead_letter_queue_name(queue))
    assert json.loads(dead.body) == body
    assert dead.headers["x-error"] == "unknown voice 'no-such-voice'"
    assert dead.message_id == msg_id


async def test_requeued_job_comes_back(
    settings: AmqpSettings, queue: str, sink: FakeSink, broker: Broker
) -> None:
    async with running(make_source(settings, queue, sink)):
        msg_id = await publish(settings, build_text("later"), queue)
        await eventually(lambda: len(sink.jobs) == 1)
        sink.jobs[0].settle(Outcome.REQUEUED, "shutting down")
        await eventually(lambda: len(sink.jobs) == 2)
        assert sink.jobs[1].id == msg_id and not sink.jobs[1].is_settled
        sink.jobs[1].settle(Outcome.PLAYED)
    assert await broker.ready(queue) == 0


async def test_control_reaches_the_sink_while_speech_is_held(
    settings: AmqpSettings, queue: str, sink: FakeSink, broker: Broker
) -> None:
    async with running(make_source(settings, queue, sink, prefetch=4)):
        for i in range(6):
            await publish(settings, build_text(f"speech {i}"), queue)
        await eventually(lambda: len(sink.jobs) == 4)
        assert await broker.ready(queue) == 2  # the prefetch window is full
        await publish(settings, build_control("interrupt"), queue, control=True)
        await eventually(lambda: sink.interrupts == 1)
        assert not any(job.is_settled for job in sink.jobs)
        assert len(sink.jobs) == 4
    assert await broker.ready(control_queue_name(queue)) == 0  # the control message was acked


async def test_clear_drops_held_jobs_and_purges_the_queue(
    settings: AmqpSettings, queue: str, sink: FakeSink, broker: Broker
) -> None:
    async with running(make_source(settings, queue, sink, prefetch=4)):
        for i in range(7):
            await publish(settings, build_text(f"speech {i}"), queue)
        await eventually(lambda: len(sink.jobs) == 4)
        await publish(settings, build_control("clear"), queue, control=True)
        await eventually(lambda: sink.clears == 1)
        assert all(job.outcome is Outcome.DROPPED for job in sink.jobs)
        # A message published after the clear is the next thing the pipeline sees:
        # none of the three that were waiting survived the purge.
        marker = await publish(settings, build_text("after the clear"), queue)
        await eventually(lambda: len(sink.jobs) == 5)
        assert sink.jobs[4].id == marker
        sink.jobs[4].settle(Outcome.PLAYED)
    assert await broker.ready(queue) == 0
    assert await broker.ready(dead_letter_queue_name(queue)) == 0


async def test_control_on_the_main_queue_acts_the_same(
    settings: AmqpSettings, queue: str, sink: FakeSink, broker: Broker
) -> None:
    async with running(make_source(settings, queue, sink)):
        await publish(settings, build_text("speak"), queue)
        await eventually(lambda: len(sink.jobs) == 1)
        await publish(settings, build_control("interrupt"), queue)
        await eventually(lambda: sink.interrupts == 1)
        await publish(settings, build_control("clear"), queue)
        await eventually(lambda: sink.clears == 1)
        assert sink.jobs[0].outcome is Outcome.DROPPED
    assert await broker.ready(queue) == 0


async def test_jobs_reach_the_sink_in_publish_order(
    settings: AmqpSettings, queue: str, sink: FakeSink
) -> None:
    ids = []
    for i in range(5):
        ids.append(await publish(settings, build_text(f"number {i}", interrupt=i == 3), queue))
    async with running(make_source(settings, queue, sink, prefetch=4)):
        await eventually(lambda: len(sink.jobs) == 4)
        sink.jobs[0].settle(Outcome.PLAYED)  # frees the window for the fifth
        await eventually(lambda: len(sink.jobs) == 5)
        for job in sink.jobs:
            job.settle(Outcome.PLAYED)
    assert [job.id for job in sink.jobs] == ids
    assert sink.urgent == [False, False, False, True, False]


async def test_audio_message_reaches_the_sink_with_its_bytes(
    settings: AmqpSettings, queue: str, sink: FakeSink
) -> None:
    payload = bytes(range(256)) * 4
    body = {"type": "audio", "data": base64.b64encode(payload).decode(), "format": "wav", "id": "a1"}
    async with running(make_source(settings, queue, sink)):
        await publish(settings, body, queue)
        await eventually(lambda: len(sink.jobs) == 1)
        assert sink.jobs[0].message.audio_bytes() == payload  # type: ignore[union-attr]
        assert sink.jobs[0].id == "a1"
        sink.jobs[0].settle(Outcome.PLAYED)


async def test_wrong_password_is_reported_once_without_the_password(
    settings: AmqpSettings,
    queue: str,
    sink: FakeSink,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "not-the-password-5f1c"
    bad = AmqpSettings(host=settings.host, port=settings.port, user="guest", password=secret)
    source = make_source(bad, queue, sink)
    attempts = []
    real_connect = aio_pika.connect_robust

    async def counting_connect(*args: object, **kwargs: object) -> object:
        attempts.append(1)
        return await real_connect(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(aio_pika, "connect_robust", counting_connect)
    caplog.set_level(logging.DEBUG)
    async with anyio.create_task_group() as tg:
        tg.start_soon(source.run)
        await anyio.sleep(2.0)  # ~10 attempts at reconnect_interval=0.2
        assert not source.status.connected
        assert "login refused" in source.status.last_error
        tg.cancel_scope.cancel()
    assert len(attempts) >= 5  # kept trying, quietly
    ours = [r for r in caplog.records if r.name == "poc.source.amqp" and r.levelno >= logging.WARNING]
    assert len(ours) == 1
    assert "login refused for user 'guest'" in ours[0].getMessage()
    assert secret not in caplog.text


async def test_unreachable_broker_is_retried_until_it_answers(
    settings: AmqpSettings, queue: str, sink: FakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    closed_port = AmqpSettings(host="127.0.0.1", port=1, user="guest", password="guest")
    source = make_source(closed_port, queue, sink)
    caplog.set_level(logging.INFO)
    async with anyio.create_task_group() as tg:
        tg.start_soon(source.run)
        await anyio.sleep(1.0)
        tg.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, lines
    assert "connection refused by 127.0.0.1:1" in lines[0]


def _close_connection_of(queue: str) -> None:
    """Make the broker drop our source's connection, as an outage would."""
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
        capture_output=True, text=True, check=True, timeout=20,
    ).stdout
    [pid] = [line.split("\t")[0] for line in listing.splitlines() if f"poc source {queue}" in line]
    subprocess.run(
        ["rabbitmqctl", "-q", "close_connection", pid, "test outage"],
        capture_output=True, check=True, timeout=20,
    )


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl")
async def test_held_message_survives_an_outage_and_is_not_spoken_twice(
    settings: AmqpSettings, queue: str, sink: FakeSink, broker: Broker
) -> None:
    async with running(make_source(settings, queue, sink)) as source:
        msg_id = await publish(settings, build_text("through the storm"), queue)
        await eventually(lambda: len(sink.jobs) == 1)
        await anyio.to_thread.run_sync(_close_connection_of, queue)
        await eventually(lambda: source.status.reconnects == 1)
        assert source.status.connected
        # The broker redelivers the held message; a marker shows what reached the sink since.
        marker = await publish(settings, build_text("marker"), queue)
        await eventually(lambda: len(sink.jobs) == 2)
        assert [job.id for job in sink.jobs] == [msg_id, marker]
        sink.jobs[0].settle(Outcome.PLAYED)  # its old ack fails; the redelivery is acked
        sink.jobs[1].settle(Outcome.PLAYED)
    assert await broker.ready(queue) == 0
