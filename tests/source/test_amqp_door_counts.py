"""Messages the RabbitMQ adapter refuses at the door, against the real local broker.

What must hold: every message refused before it reaches the pipeline (a body that breaks the
contract, speech on the control queue) is counted as dead-lettered, in poc_messages_total and
in the studio's figure, once per message: never again for a redelivery, and never by the
adapter for a job the pipeline dead-lettered (the pipeline counts those). And a refused body
that names a usable id is logged and dead-lettered under that id, so the producer can find it.
"""

from __future__ import annotations

import json
import logging
import shutil

import aio_pika
import anyio
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from support.amqp import close_connection_of
from support.amqp_source import BrokenSink, FakeSink, ready, running, wait_ready
from support.polling import eventually

from poc.jobs import Outcome
from poc.messages import MessageLimits, refused_body_id
from poc.metrics import Metrics
from poc.source.amqp import AmqpSource
from poc.source.connection import AmqpSettings, dead_letter_queue_name
from poc.source.publish import build_text, publish

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

LIMITS = MessageLimits(max_body_bytes=10_000, max_text_chars=50)
DEAD = {"outcome": "dead_lettered"}


def make_source(settings: AmqpSettings, queue: str, sink: FakeSink, metrics: Metrics) -> AmqpSource:
    return AmqpSource(settings, sink, LIMITS, queue=queue, reconnect_interval=0.2, metrics=metrics)


def dead_lettered(metrics: Metrics) -> float:
    """poc_messages_total{outcome="dead_lettered"}, 0 while the series does not exist yet."""
    return metrics.registry.get_sample_value("poc_messages_total", DEAD) or 0.0


async def drain(channel: AbstractChannel, name: str) -> list[AbstractIncomingMessage]:
    queue = await channel.declare_queue(name, passive=True)
    messages = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        messages.append(message)
    return messages


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


# Each refused at the door for a different reason.
REFUSED = [
    b"hello there",  # not JSON
    body(type="text", data="   "),  # empty data
    body(type="text", data="y" * 51),  # too long
    body(type="video", data="hi"),  # unknown type
    body(type="audio", data="not base64!", format="wav"),  # bad base64
    body(type="text", data="hi", id="a\nb"),  # bad id
    body(type="control", action="pause"),  # unknown control action
]


async def test_every_refusal_at_the_door_is_counted_as_dead_lettered(
    settings: AmqpSettings, queue: str, channel: AbstractChannel
) -> None:
    metrics, sink = Metrics(), FakeSink()
    async with running(make_source(settings, queue, sink, metrics)):
        for refused in REFUSED:
            await publish(settings, refused, queue)
        await publish(settings, build_text("hello"), queue, control=True)  # speech, wrong queue
        await wait_ready(channel, dead_letter_queue_name(queue), len(REFUSED) + 1)
        await eventually(lambda: dead_lettered(metrics) == len(REFUSED) + 1)
    assert sink.jobs == []
    # The studio's figure (/api/status) is the same count.
    assert metrics.figures.outcomes["dead_lettered"] == len(REFUSED) + 1


async def test_a_job_the_pipeline_dead_letters_is_not_counted_by_the_adapter(
    settings: AmqpSettings, queue: str, channel: AbstractChannel
) -> None:
    """The pipeline counts the jobs it settles; the adapter only moves this one to the DLQ."""
    metrics, sink = Metrics(), FakeSink()
    async with running(make_source(settings, queue, sink, metrics)):
        await publish(settings, build_text("Bonjour"), queue)
        await eventually(lambda: len(sink.jobs) == 1)
        sink.jobs[0].settle(Outcome.DEAD_LETTERED, "unknown voice 'x'")
        await wait_ready(channel, dead_letter_queue_name(queue), 1)
        await publish(settings, b"not json", queue)  # a refusal after it, to know we waited
        await wait_ready(channel, dead_letter_queue_name(queue), 2)
        await eventually(lambda: dead_lettered(metrics) >= 1)
    assert dead_lettered(metrics) == 1
    assert metrics.figures.outcomes["dead_lettered"] == 1


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl")
async def test_a_refusal_redelivered_after_its_ack_was_lost_is_counted_once(
    settings: AmqpSettings, queue: str, channel: AbstractChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first ack is lost (as on a channel that died), so the broker redelivers the refused
    message after the reconnect, and the adapter refuses it again: one message, one count."""
    real_ack = aio_pika.IncomingMessage.ack
    lost: list[AbstractIncomingMessage] = []

    async def lose_first_ack(self: aio_pika.IncomingMessage, multiple: bool = False) -> None:
        if not lost:
            lost.append(self)
            raise ConnectionError("channel gone")
        await real_ack(self, multiple)

    monkeypatch.setattr(aio_pika.IncomingMessage, "ack", lose_first_ack)
    metrics, sink = Metrics(), FakeSink()
    dlq = dead_letter_queue_name(queue)
    async with running(make_source(settings, queue, sink, metrics)) as source:
        await publish(settings, body(type="video", data="hi", id="twice-delivered"), queue)
        await wait_ready(channel, dlq, 1)
        await eventually(lambda: len(lost) == 1)
        await anyio.to_thread.run_sync(close_connection_of, queue)
        await eventually(lambda: source.status.reconnects == 1)
        await wait_ready(channel, dlq, 2)  # refused again on its redelivery
    assert await ready(channel, queue) == 0
    assert dead_lettered(metrics) == 1
    assert metrics.figures.outcomes["dead_lettered"] == 1


async def test_a_refused_body_is_logged_and_dead_lettered_under_its_own_id(
    settings: AmqpSettings,
    queue: str,
    channel: AbstractChannel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    metrics, sink = Metrics(), FakeSink()
    dlq = dead_letter_queue_name(queue)
    async with running(make_source(settings, queue, sink, metrics)):
        amqp_ids = {}
        for refused in (
            body(type="video", data="hi", id="op-unknown-type"),
            body(type="control", action="pause", id="op-pause"),
            body(type="text", data="hi", id="x" * 129),  # not a usable id: the AMQP one
            body(type="video", data="hi", id=42),  # nor is a number
        ):
            amqp_ids[refused] = await publish(settings, refused, queue)
        await wait_ready(channel, dlq, 4)
    by_body = {m.body: m for m in await drain(channel, dlq)}
    ids = [by_body[refused].message_id for refused in amqp_ids]
    kept = list(amqp_ids.values())
    assert ids == ["op-unknown-type", "op-pause", kept[2], kept[3]]
    lines = [r.getMessage() for r in caplog.records if "dead-lettered message" in r.getMessage()]
    assert any("id=op-unknown-type " in line for line in lines), lines
    assert any("id=op-pause " in line for line in lines), lines


@pytest.mark.parametrize(
    ("refused", "expected"),
    [
        (body(type="video", id="op-unknown-type"), "op-unknown-type"),
        ("\ufeff".encode() + body(type="video", id="with-bom"), "with-bom"),
        (body(type="text", data="x" * 60, id="語" * 128), "語" * 128),  # at the limit
        (body(type="video", id="x" * 129), None),  # over it
        (body(type="video", id="a\u202eb"), None),  # a formatting character
        (body(type="video", id="   "), None),  # blank: no id
        (body(type="video", id=["op"]), None),
        (b'{"type": "video", "id": "op", "x": NaN}', None),  # not JSON parse_message reads
        (b'["op"]', None),
        (b'{"id": "op"', None),
        (b'{"id": "caf\xe9"}', None),
        (body(id="op", pad="p" * 10_000), None),  # over the size limit: not read at all
    ],
)
def test_the_id_of_a_refused_body_is_used_only_when_a_valid_message_could_carry_it(
    refused: bytes, expected: str | None
) -> None:
    assert refused_body_id(refused, LIMITS) == expected


async def test_a_job_the_sink_refused_is_counted_as_dead_lettered(
    settings: AmqpSettings, queue: str, channel: AbstractChannel
) -> None:
    """The adapter settles that job itself, so no pipeline counts it."""
    metrics = Metrics()
    async with running(make_source(settings, queue, BrokenSink(), metrics)):
        await publish(settings, build_text("hello"), queue)
        await wait_ready(channel, dead_letter_queue_name(queue), 1)
        await eventually(lambda: dead_lettered(metrics) == 1)
    assert metrics.figures.outcomes["dead_lettered"] == 1
