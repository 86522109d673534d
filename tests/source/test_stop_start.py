"""`stop` and `start` through the RabbitMQ adapter, against the real local broker.

What must hold: a stop hands every held message back to the queue unplayed and consumes no
more speech (what is published meanwhile waits in the queue), while the control queue is still
read so a start can arrive; a start consumes again and the messages come back in their order.
Stop and start are idempotent and each logs one line.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import pytest
from aio_pika.abc import AbstractChannel

from support.amqp_source import ready

from poc.jobs import Job, Outcome
from poc.messages import MessageLimits
from poc.source.amqp import AmqpSource
from poc.source.connection import AmqpSettings
from poc.source.publish import build_control, build_text, publish

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


class Sink:
    """Records the jobs the adapter submits; the test settles them."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def submit(self, job: Job, *, urgent: bool = False) -> None:
        self.jobs.append(job)

    def interrupt(self) -> None:
        pass

    def clear(self) -> int:
        return 0


class Switch:
    """A StreamSwitch as the service implements it: a stop hands every held job back."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.stops = 0
        self.starts = 0
        self.stopped = False

    async def stop_stream(self) -> int | None:
        if self.stopped:
            return None
        self.stopped, self.stops = True, self.stops + 1
        return sum(job.settle(Outcome.REQUEUED, "stopped") for job in self.sink.jobs)

    async def start_stream(self) -> float | None:
        if not self.stopped:
            return None
        self.stopped, self.starts = False, self.starts + 1
        return 0.0


async def eventually(check: Callable[[], object], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.01)


async def eventually_ready(channel: AbstractChannel, name: str, count: int) -> None:
    with anyio.fail_after(5):
        while await ready(channel, name) != count:
            await anyio.sleep(0.02)


@asynccontextmanager
async def running(source: AmqpSource) -> AsyncIterator[AmqpSource]:
    async with anyio.create_task_group() as tg:
        await tg.start(source.run)
        yield source
        tg.cancel_scope.cancel()


async def test_stop_hands_back_held_speech_and_start_plays_everything_in_order(
    settings: AmqpSettings, queue: str, channel: AbstractChannel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="poc.source.amqp")
    sink = Sink()
    switch = Switch(sink)
    source = AmqpSource(settings, sink, MessageLimits(), queue=queue, prefetch=2,
                        reconnect_interval=0.2, stream=switch)  # fmt: skip
    ids = [await publish(settings, build_text(f"speech {i}"), queue) for i in range(3)]
    async with running(source):
        await eventually(lambda: len(sink.jobs) == 2)  # the prefetch window: two held
        await publish(settings, build_control("stop"), queue, control=True)
        await eventually(lambda: switch.stops == 1)
        assert [job.outcome for job in sink.jobs] == [Outcome.REQUEUED] * 2
        # Both held messages are back in the queue with the one never delivered; nothing is
        # consumed while stopped, so a message published now waits there too.
        await eventually_ready(channel, queue, 3)
        ids.append(await publish(settings, build_text("published while stopped"), queue))
        await eventually_ready(channel, queue, 4)
        assert len(sink.jobs) == 2

        await publish(settings, build_control("stop"), queue, control=True)  # a second stop
        await publish(settings, build_control("start"), queue, control=True)
        await eventually(lambda: switch.starts == 1)
        assert switch.stops == 1  # the second stop did nothing (the lane is in order)
        # Consuming again: every message comes back, in publish order, and plays once.
        for count in (4, 6):  # two at a time: the prefetch window
            await eventually(lambda: len(sink.jobs) == count)
            for job in sink.jobs[count - 2 :]:
                job.settle(Outcome.PLAYED)
        await publish(settings, build_control("start"), queue, control=True)  # on air: a no-op
        await eventually(lambda: "start, but the stream is on air already" in caplog.text)
    assert [job.id for job in sink.jobs[2:]] == ids
    assert all(job.outcome is Outcome.PLAYED for job in sink.jobs[2:])
    assert await ready(channel, queue) == 0
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert sum(line.startswith("control: stop") for line in lines) == 1, lines
    assert sum(line.startswith("control: start") for line in lines) == 1, lines
    assert switch.starts == 1


async def test_stop_on_the_main_queue_also_pauses_and_start_still_arrives(
    settings: AmqpSettings, queue: str, channel: AbstractChannel
) -> None:
    sink = Sink()
    switch = Switch(sink)
    source = AmqpSource(settings, sink, MessageLimits(), queue=queue, reconnect_interval=0.2, stream=switch)
    async with running(source):
        await publish(settings, build_control("stop"), queue)  # behind speech, on the speech queue
        await eventually(lambda: switch.stops == 1)
        marker = await publish(settings, build_text("after the stop"), queue)
        await eventually_ready(channel, queue, 1)
        assert sink.jobs == []
        await publish(settings, build_control("start"), queue, control=True)
        await eventually(lambda: len(sink.jobs) == 1)
        assert sink.jobs[0].id == marker
        sink.jobs[0].settle(Outcome.PLAYED)
    assert await ready(channel, queue) == 0


async def test_a_source_begun_stopped_takes_no_speech_until_a_start(
    settings: AmqpSettings, queue: str, channel: AbstractChannel
) -> None:
    """A station rebuilt while an operator had it stopped begins stopped: what waits in its
    queue stays there (it would have played to an audience the operator sent away), and its
    control queue is read so that the operator's start still works."""
    sink = Sink()
    switch = Switch(sink)
    switch.stopped = True  # the Service begins off air too (Service.stay_stopped)
    source = AmqpSource(settings, sink, MessageLimits(), queue=queue, reconnect_interval=0.2, stream=switch,
                        stopped=True)  # fmt: skip
    waiting = await publish(settings, build_text("queued while stopped"), queue)
    async with running(source):
        await anyio.sleep(0.5)  # time for a consumer to take it, had there been one
        assert sink.jobs == []
        assert await ready(channel, queue) == 1
        await publish(settings, build_control("start"), queue, control=True)
        await eventually(lambda: len(sink.jobs) == 1)
        assert sink.jobs[0].id == waiting and switch.starts == 1
        sink.jobs[0].settle(Outcome.PLAYED)
    assert await ready(channel, queue) == 0
