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
import socket

import aio_pika
import aiormq
import anyio
import attrs
import pytest
from aio_pika.abc import AbstractChannel
from anyio.abc import SocketStream, TaskStatus

from support.amqp import close_connection_of
from support.amqp_source import BrokenSink, FakeSink, drain, ready, running, wait_ready
from support.polling import eventually

from poc.jobs import Outcome
from poc.messages import MessageLimits, TextMessage
from poc.source import amqp as amqp_source
from poc.source.amqp import AmqpSource
from poc.source.connection import AmqpSettings, control_queue_name, dead_letter_queue_name
from poc.source.publish import build_control, build_text, publish

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

LIMITS = MessageLimits(max_body_bytes=10_000, max_text_chars=50)


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()


@pytest.fixture
def connect_attempts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every TCP connection attempt aio-pika makes (first connects and its own
    reconnects alike), so a test can wait for a number of retries instead of sleeping."""
    attempts: list[int] = []
    real_connect = aiormq.connect

    async def counting_connect(*args: object, **kwargs: object) -> object:
        attempts.append(1)
        return await real_connect(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(aiormq, "connect", counting_connect)
    return attempts


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
    # Ids go into the DLQ copy's message_id and every log line; a voice cannot say a NUL.
    (text("hi", id="\ud800"), "'id' contains lone surrogate U+D800 at offset 0"),
    (text("hi", id="i" * 300), "'id' is too long: 300 characters, over the 128-character limit"),
    (text("hi", session_id="a\nb"), "'session_id' contains control character U+000A"),
    (text("a\u0000b"), "'data' contains control character U+0000 at offset 1"),
]


async def test_every_bad_message_is_dead_lettered_with_its_body_and_reason(
    settings: AmqpSettings, queue: str, sink: FakeSink, channel: AbstractChannel
) -> None:
    dlq = dead_letter_queue_name(queue)
    async with running(make_source(settings, queue, sink)):
        for body, _ in BAD_BODIES:
            await publish(settings, body, queue)
        # Speech on the control queue is a mistake too, reported as such.
        await publish(settings, build_text("hello"), queue, control=True)
        await wait_ready(channel, dlq, len(BAD_BODIES) + 1)
    # Stopped: anything left unacked would now be back in the queue.
    assert await ready(channel, queue) == 0
    assert await ready(channel, control_queue_name(queue)) == 0
    dead = await drain(channel, dlq)
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


async def test_speech_is_acked_only_after_the_pipeline_settles_it(
    settings: AmqpSettings, queue: str, sink: FakeSink, channel: AbstractChannel
) -> None:
    msg_id = await publish(settings, build_text("Hello!", voice="joe"), queue)
    async with running(make_source(settings, queue, sink)):
        await eventually(lambda: len(sink.jobs) == 1)
        job = sink.jobs[0]
        assert job.id == msg_id
        assert isinstance(job.message, TextMessage) and job.message.data == "Hello!"
        assert job.message.voice == "joe"
        assert await ready(channel, queue) == 0  # delivered, held unacked
    # The service stopped before the job settled: the broker must still have it.
    await wait_ready(channel, queue, 1)

    again = FakeSink()
    async with running(make_source(settings, queue, again)):
        await eventually(lambda: len(again.jobs) == 1)
        assert again.jobs[0].id == msg_id
        again.jobs[0].settle(Outcome.PLAYED)
    # Settled PLAYED before the stop: acked, gone for good.
    assert await ready(channel, queue) == 0


async def test_interrupted_and_dropped_jobs_are_acked(
    settings: AmqpSettings, queue: str, sink: FakeSink, channel: AbstractChannel
) -> None:
    async with running(make_source(settings, queue, sink)):
        await publish(settings, build_text("one"), queue)
        await publish(settings, build_text("two"), queue)
        await eventually(lambda: len(sink.jobs) == 2)
        sink.jobs[0].settle(Outcome.INTERRUPTED)
        sink.jobs[1].settle(Outcome.DROPPED)
    assert await ready(channel, queue) == 0
    assert await ready(channel, dead_letter_queue_name(queue)) == 0


async def test_dead_lettered_job_moves_to_the_dlq_with_the_pipeline_reason(
    settings: AmqpSettings,
    queue: str,
    sink: FakeSink,
    channel: AbstractChannel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    body = build_text("Bonjour", voice="no-such-voice")
    async with running(make_source(settings, queue, sink)):
        msg_id = await publish(settings, body, queue)
        await eventually(lambda: len(sink.jobs) == 1)
        sink.jobs[0].settle(Outcome.DEAD_LETTERED, "unknown voice 'no-such-voice'")
        dlq = dead_letter_queue_name(queue)
        await wait_ready(channel, dlq, 1)
    assert await ready(channel, queue) == 0
    # The pipeline logs the outcome with its reason (job_queue.settled): no second line here.
    assert [line for line in warnings(caplog, "poc.source") if msg_id in line] == []
    [dead] = await drain(channel, dead_letter_queue_name(queue))
    assert json.loads(dead.body) == body
    assert dead.headers["x-error"] == "unknown voice 'no-such-voice'"
    assert dead.message_id == msg_id


def dead_letter_failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [line for line in warnings(caplog, "poc.") if "could not dead-letter" in line]


async def test_a_long_unicode_id_is_dead_lettered_once_instead_of_looping(
    settings: AmqpSettings,
    queue: str,
    sink: FakeSink,
    channel: AbstractChannel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """100 CJK characters are a valid id but 300 bytes, over the 255 an AMQP message_id holds:
    the DLQ publish used to fail, requeue the message, and fail again on every redelivery."""
    long_id = "語" * 100
    dlq = dead_letter_queue_name(queue)
    caplog.set_level(logging.WARNING)
    async with running(make_source(settings, queue, sink)):
        await publish(settings, text("hi", id=long_id), queue)
        await eventually(lambda: len(sink.jobs) == 1)
        assert sink.jobs[0].id == long_id
        sink.jobs[0].settle(Outcome.DEAD_LETTERED, "unknown voice 'x'")
        await wait_ready(channel, dlq, 1)
        await anyio.sleep(0.3)  # time for a loop to show itself, had there been one
    assert await ready(channel, queue) == 0
    [dead] = await drain(channel, dlq)
    assert dead.headers["x-error"] == "unknown voice 'x'"
    assert json.loads(dead.body)["id"] == long_id  # the whole id is still in the body
    assert dead.message_id == "語" * 85  # cut at a character boundary, 255 bytes
    assert len(sink.jobs) == 1
    assert dead_letter_failures(caplog) == []


async def test_an_odd_amqp_message_id_is_escaped_for_logs_and_the_dlq(
    settings: AmqpSettings, queue: str, sink: FakeSink, channel: AbstractChannel
) -> None:
    """A producer's own message_id property is only bounded by the protocol: a line break in it
    must not reach a log line, and the escaped form is what the DLQ copy carries."""
    odd = "line\nbreak\u202e"
    dlq = dead_letter_queue_name(queue)
    async with running(make_source(settings, queue, sink)):
        for raw in (text("spoken"), b"not json"):
            await channel.default_exchange.publish(
                aio_pika.Message(raw, message_id=odd), routing_key=queue
            )
        await eventually(lambda: len(sink.jobs) == 1)
        assert sink.jobs[0].id == "line\\nbreak\\u202e"
        sink.jobs[0].settle(Outcome.DEAD_LETTERED, "unknown voice 'x'")
        await wait_ready(channel, dlq, 2)
    assert await ready(channel, queue) == 0
    dead = await drain(channel, dlq)
    assert [m.message_id for m in dead] == ["line\\nbreak\\u202e"] * 2
    by_body = {m.body: str(m.headers["x-error"]) for m in dead}
    assert "not JSON" in by_body[b"not json"]


async def test_a_dlq_copy_amqp_cannot_encode_goes_without_its_properties(
    settings: AmqpSettings,
    queue: str,
    sink: FakeSink,
    channel: AbstractChannel,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever the property that cannot be encoded, the failure repeats on every redelivery:
    the copy must still reach the DLQ, with its reason, rather than go back to the queue."""
    monkeypatch.setattr(amqp_source, "_wire_id", lambda job_id: job_id)  # the id as it is
    dlq = dead_letter_queue_name(queue)
    caplog.set_level(logging.WARNING)
    async with running(make_source(settings, queue, sink)):
        await publish(settings, text("hi", id="語" * 100), queue)
        await eventually(lambda: len(sink.jobs) == 1)
        sink.jobs[0].settle(Outcome.DEAD_LETTERED, "unknown voice 'x'")
        await wait_ready(channel, dlq, 1)
        await anyio.sleep(0.3)
    assert await ready(channel, queue) == 0
    [dead] = await drain(channel, dlq)
    assert dead.headers == {"x-error": "unknown voice 'x'", "x-original-queue": queue}
    assert json.loads(dead.body)["id"] == "語" * 100
    assert dead_letter_failures(caplog) == []
    assert any("sending it without them" in line for line in warnings(caplog, "poc."))


# When the shutdown comes, in turns of the event loop after the job settles (or the clear is
# published): the few hundred microseconds a purge, a DLQ publish and an ack take on the local
# broker span a handful of turns, so some shutdowns land between two of those steps.
SHUTDOWN_AFTER_TURNS = range(40)


async def turns(count: int) -> None:
    for _ in range(count):
        await anyio.sleep(0)


@pytest.mark.parametrize("outcome", [Outcome.DEAD_LETTERED, Outcome.PLAYED])
async def test_a_job_settled_as_the_service_stops_ends_in_exactly_one_place(
    settings: AmqpSettings, queue: str, channel: AbstractChannel, outcome: Outcome
) -> None:
    """A shutdown landing while a settled job is being acked (or copied to the DLQ and then
    acked) must not leave the message to be redelivered: a dead-lettered one would sit in both
    queues, a played one would be spoken again after the restart."""
    dlq = dead_letter_queue_name(queue)
    expected_dead = 1 if outcome is Outcome.DEAD_LETTERED else 0
    left_behind = []
    for delay in SHUTDOWN_AFTER_TURNS:
        sink = FakeSink()
        async with running(make_source(settings, queue, sink)):
            await publish(settings, build_text(f"stopped {delay} turns later"), queue)
            await eventually(lambda: len(sink.jobs) == 1)
            sink.jobs[0].settle(outcome, "unknown voice")
            await turns(delay)
        await anyio.sleep(0.05)  # what the broker takes back on close is ready again by now
        back, dead = len(await drain(channel, queue)), len(await drain(channel, dlq))
        if (back, dead) != (0, expected_dead):
            left_behind.append((delay, back, dead))
    assert left_behind == [], "(delay, back in the queue, in the DLQ) after each stop"


async def test_a_clear_cut_off_by_a_stop_never_purges_and_stays_to_be_redelivered(
    settings: AmqpSettings, queue: str, channel: AbstractChannel
) -> None:
    """A redelivered clear purges the queue again, taking whatever was published after the
    restart with it: so a clear whose purge ran must also be acked, even if the service is
    stopping at that moment."""
    control = control_queue_name(queue)
    broken = []
    for delay in SHUTDOWN_AFTER_TURNS:
        sink = FakeSink()
        async with running(make_source(settings, queue, sink, prefetch=1)):
            await publish(settings, build_text("held"), queue)
            waiting = await publish(settings, build_text("waiting"), queue)
            await eventually(lambda: len(sink.jobs) == 1)
            # From the test's open channel: publish() connects each time, and by the time it
            # has closed its connection the clear has long been handled.
            await channel.default_exchange.publish(
                aio_pika.Message(json.dumps(build_control("clear")).encode()), routing_key=control
            )
            await turns(delay)
        await anyio.sleep(0.05)
        clear_back = len(await drain(channel, control)) == 1
        still_queued = {m.message_id for m in await drain(channel, queue)}
        if clear_back and waiting not in still_queued:
            broken.append(delay)
    assert broken == [], "delays after which the clear had purged but was not acked"


async def test_a_close_cut_short_still_hands_the_unsettled_messages_back(
    settings: AmqpSettings, queue: str, sink: FakeSink, channel: AbstractChannel
) -> None:
    """The graceful stop gives closing a budget; when it runs out at once, the connection must
    still close, or the held messages stay unacked (and away from the station replacing this
    one) for as long as the process lives."""
    async with running(make_source(settings, queue, sink)) as source:
        msg_id = await publish(settings, build_text("held"), queue)
        await eventually(lambda: len(sink.jobs) == 1)
        with anyio.CancelScope() as budget:
            budget.cancel()
            await source.aclose()
        await wait_ready(channel, queue, 1)
        assert not source.status.connected
    [back] = await drain(channel, queue)
    assert back.message_id == msg_id


async def test_requeued_job_comes_back(
    settings: AmqpSettings, queue: str, sink: FakeSink, channel: AbstractChannel
) -> None:
    async with running(make_source(settings, queue, sink)):
        msg_id = await publish(settings, build_text("later"), queue)
        await eventually(lambda: len(sink.jobs) == 1)
        sink.jobs[0].settle(Outcome.REQUEUED, "shutting down")
        await eventually(lambda: len(sink.jobs) == 2)
        assert sink.jobs[1].id == msg_id and not sink.jobs[1].is_settled
        sink.jobs[1].settle(Outcome.PLAYED)
    assert await ready(channel, queue) == 0


async def test_control_reaches_the_sink_while_speech_is_held(
    settings: AmqpSettings, queue: str, sink: FakeSink, channel: AbstractChannel
) -> None:
    async with running(make_source(settings, queue, sink, prefetch=4)):
        for i in range(6):
            await publish(settings, build_text(f"speech {i}"), queue)
        await eventually(lambda: len(sink.jobs) == 4)
        assert await ready(channel, queue) == 2  # the prefetch window is full
        await publish(settings, build_control("interrupt"), queue, control=True)
        await eventually(lambda: sink.interrupts == 1)
        assert not any(job.is_settled for job in sink.jobs)
        assert len(sink.jobs) == 4
    assert await ready(channel, control_queue_name(queue)) == 0  # the control message was acked


async def test_a_clear_whose_purge_is_slow_still_drops_and_is_acked(
    settings: AmqpSettings,
    queue: str,
    sink: FakeSink,
    channel: AbstractChannel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A busy broker may take seconds to purge a long queue. While the service runs, nothing
    cuts the clear short: cut, it would drop nothing and stay unacked, to be redelivered after
    a restart and purge what came since. (The broker's slowness is the one thing faked here.)"""
    real_purge = aio_pika.queue.Queue.purge

    async def slow_purge(self: object, *args: object, **kwargs: object) -> object:
        await anyio.sleep(3.0)  # longer than the deadline settles get once the service stops
        return await real_purge(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(aio_pika.queue.Queue, "purge", slow_purge)
    async with running(make_source(settings, queue, sink, prefetch=1)):
        await publish(settings, build_text("held"), queue)
        await eventually(lambda: len(sink.jobs) == 1)
        await publish(settings, build_control("clear"), queue, control=True)
        await eventually(lambda: sink.clears == 1, timeout=10)
        await anyio.sleep(0.2)  # the ack follows the drop
    assert sink.jobs[0].outcome is Outcome.DROPPED
    assert await ready(channel, control_queue_name(queue)) == 0  # the clear was acked


async def test_clear_drops_held_jobs_and_purges_the_queue(
    settings: AmqpSettings, queue: str, sink: FakeSink, channel: AbstractChannel
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
    assert await ready(channel, queue) == 0
    assert await ready(channel, dead_letter_queue_name(queue)) == 0


async def test_control_on_the_main_queue_acts_the_same(
    settings: AmqpSettings, queue: str, sink: FakeSink, channel: AbstractChannel
) -> None:
    async with running(make_source(settings, queue, sink)):
        await publish(settings, build_text("speak"), queue)
        await eventually(lambda: len(sink.jobs) == 1)
        await publish(settings, build_control("interrupt"), queue)
        await eventually(lambda: sink.interrupts == 1)
        await publish(settings, build_control("clear"), queue)
        await eventually(lambda: sink.clears == 1)
        assert sink.jobs[0].outcome is Outcome.DROPPED
    assert await ready(channel, queue) == 0


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
    payload = bytes(range(256)) * 800  # big enough to be validated in a worker thread
    body = {"type": "audio", "data": base64.b64encode(payload).decode(), "format": "wav", "id": "a1"}
    source = AmqpSource(settings, sink, MessageLimits(), queue=queue, reconnect_interval=0.2)
    async with running(source):
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
    connect_attempts: list[int],
) -> None:
    secret = "not-the-password-5f1c"
    bad = AmqpSettings(host=settings.host, port=settings.port, user="guest", password=secret)
    source = make_source(bad, queue, sink)
    caplog.set_level(logging.DEBUG)
    async with anyio.create_task_group() as tg:
        tg.start_soon(source.run)
        # the 6th attempt has begun, so at least 5 were refused
        await eventually(lambda: len(connect_attempts) >= 6, timeout=20)
        assert not source.status.connected
        assert "login refused" in source.status.last_error
        tg.cancel_scope.cancel()
    assert len(connect_attempts) >= 6  # kept trying, quietly
    ours = [r for r in caplog.records if r.name == "poc.source.amqp" and r.levelno >= logging.WARNING]
    assert len(ours) == 1
    assert "login refused for user 'guest'" in ours[0].getMessage()
    assert secret not in caplog.text


async def test_unreachable_broker_is_retried_until_it_answers(
    settings: AmqpSettings,
    queue: str,
    sink: FakeSink,
    caplog: pytest.LogCaptureFixture,
    connect_attempts: list[int],
) -> None:
    closed_port = AmqpSettings(host="127.0.0.1", port=1, user="guest", password="guest")
    source = make_source(closed_port, queue, sink)
    caplog.set_level(logging.INFO)
    async with anyio.create_task_group() as tg:
        tg.start_soon(source.run)
        await eventually(lambda: len(connect_attempts) >= 4, timeout=20)  # 3 refused, retrying
        tg.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, lines
    assert "connection refused by 127.0.0.1:1" in lines[0]


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl")
async def test_held_message_survives_an_outage_and_is_not_spoken_twice(
    settings: AmqpSettings, queue: str, sink: FakeSink, channel: AbstractChannel
) -> None:
    async with running(make_source(settings, queue, sink)) as source:
        msg_id = await publish(settings, build_text("through the storm"), queue)
        await eventually(lambda: len(sink.jobs) == 1)
        await anyio.to_thread.run_sync(close_connection_of, queue)
        await eventually(lambda: source.status.reconnects == 1)
        assert source.status.connected
        # The broker redelivers the held message; a marker shows what reached the sink since.
        marker = await publish(settings, build_text("marker"), queue)
        await eventually(lambda: len(sink.jobs) == 2)
        assert [job.id for job in sink.jobs] == [msg_id, marker]
        sink.jobs[0].settle(Outcome.PLAYED)  # its old ack fails; the redelivery is acked
        sink.jobs[1].settle(Outcome.PLAYED)
    assert await ready(channel, queue) == 0


class Relay:
    """A TCP relay to the real broker that the test can take down and bring back: an outage
    only this test's source sees (the broker itself is shared and stays up)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._scope: anyio.CancelScope | None = None

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.CancelScope() as self._scope:
            listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
            async with listener:
                task_status.started()
                await listener.serve(self._relay)

    def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        assert self._scope is not None
        self._scope.cancel()

    async def _relay(self, client: SocketStream) -> None:
        async with client, await anyio.connect_tcp("127.0.0.1", self.target_port) as upstream:
            async with anyio.create_task_group() as tg:

                async def pipe(src: SocketStream, dst: SocketStream) -> None:
                    try:
                        async for chunk in src:
                            await dst.send(chunk)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(pipe, client, upstream)
                tg.start_soon(pipe, upstream, client)


def warnings(caplog: pytest.LogCaptureFixture, name: str = "") -> list[str]:
    # The text as formatted when logged: some aio-pika records cannot be formatted later.
    return [
        r.message
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith(name)
    ]


async def test_source_waits_for_the_broker_and_rides_out_an_outage(
    settings: AmqpSettings,
    queue: str,
    sink: FakeSink,
    channel: AbstractChannel,
    caplog: pytest.LogCaptureFixture,
    connect_attempts: list[int],
) -> None:
    relay = Relay(settings.port)
    source = make_source(attrs.evolve(settings, port=relay.port), queue, sink)
    caplog.set_level(logging.INFO)
    async with anyio.create_task_group() as relay_tg:
        async with anyio.create_task_group() as tg:
            tg.start_soon(source.run)
            # nothing listening yet: wait for a few refused attempts
            await eventually(lambda: len(connect_attempts) >= 4, timeout=20)
            assert not source.status.connected
            startup = warnings(caplog)
            await relay_tg.start(relay.serve)
            await eventually(lambda: source.status.connected)

            first = await publish(settings, build_text("before the outage"), queue)
            await eventually(lambda: len(sink.jobs) == 1)
            caplog.clear()
            relay.down()
            await eventually(lambda: not source.status.connected)
            sink.jobs[0].settle(Outcome.PLAYED)  # plays while the broker is unreachable
            during = len(connect_attempts)
            await eventually(lambda: len(connect_attempts) >= during + 7, timeout=30)  # 6+ refused
            outage = warnings(caplog)
            ours = warnings(caplog, "poc.")
            await relay_tg.start(relay.serve)
            await eventually(lambda: source.status.reconnects == 1)
            assert source.status.connected

            # The broker redelivers the first message; it already played, so it must not
            # reach the sink again: the next thing the sink sees is this one.
            second = await publish(settings, build_text("after the outage"), queue)
            await eventually(lambda: len(sink.jobs) == 2)
            assert [job.id for job in sink.jobs] == [first, second]
            sink.jobs[1].settle(Outcome.PLAYED)
            tg.cancel_scope.cancel()  # the service stops first, then the relay
        relay.down()
    assert await ready(channel, queue) == 0  # both acked, nothing left for redelivery

    assert len(startup) == 1 and "connection refused" in startup[0], startup
    # A few lines about the drop (some from aio-pika), not one per reconnect attempt.
    assert len(outage) <= 10, outage
    assert len(set(ours)) == len(ours), ours


async def test_shutdown_returns_requeued_jobs_and_keeps_unsettled_ones(
    settings: AmqpSettings, queue: str, sink: FakeSink, channel: AbstractChannel
) -> None:
    source = make_source(settings, queue, sink)
    async with anyio.create_task_group() as tg:
        await tg.start(source.run)
        for i in range(3):
            await publish(settings, build_text(f"speech {i}"), queue)
        await eventually(lambda: len(sink.jobs) == 3)
        # What the service's shutdown does: settle what it can, then close the source at once.
        sink.jobs[0].settle(Outcome.PLAYED)
        sink.jobs[1].settle(Outcome.REQUEUED, "shutting down")
        await source.aclose()
        assert not source.status.connected
        # The played one is gone; the requeued and the never-settled one are waiting again.
        await wait_ready(channel, queue, 2)
        tg.cancel_scope.cancel()
    assert await ready(channel, queue) == 2


async def test_a_sink_that_raises_dead_letters_the_message_instead_of_crashing(
    settings: AmqpSettings, queue: str, channel: AbstractChannel
) -> None:
    source = make_source(settings, queue, BrokenSink())
    async with running(source):
        await publish(settings, build_text("hello"), queue)
        await wait_ready(channel, dead_letter_queue_name(queue), 1)
        [dead] = await drain(channel, dead_letter_queue_name(queue))
        assert "pipeline refused the job: pipeline bug" in str(dead.headers["x-error"])
        assert source.status.connected


async def test_job_id_is_the_body_id_else_the_amqp_message_id(
    settings: AmqpSettings, queue: str, sink: FakeSink
) -> None:
    async with running(make_source(settings, queue, sink)):
        amqp_id = await publish(settings, text("mine", id="producer-42"), queue)
        anonymous_amqp_id = await publish(settings, text("anonymous"), queue)
        await eventually(lambda: len(sink.jobs) == 2)
        assert amqp_id != "producer-42"
        assert [job.id for job in sink.jobs] == ["producer-42", anonymous_amqp_id]
        for job in sink.jobs:
            job.settle(Outcome.PLAYED)
