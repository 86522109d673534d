"""Interrupting speech on the control queue, through the RabbitMQ adapter and the real broker.

What must hold: speech with "interrupt": true published to `<queue>.control` is taken at once,
however long the main queue's backlog (the main queue's prefetch window is full of held speech),
and is held and settled like any speech: acked only once it settled, handed back on shutdown,
not spoken twice after a redelivery. A clear drops one held before it but not one sent after;
while stopped one is dead-lettered (requeued, it would come straight back); and a flood of them
never keeps a control message from being acted on.
"""

from __future__ import annotations

import shutil

import anyio
import pytest
from aio_pika.abc import AbstractChannel

from support.amqp import close_connection_of
from support.amqp_source import ready, running, wait_ready
from support.polling import eventually

from poc.jobs import Job, Outcome
from poc.messages import MessageLimits
from poc.source.amqp import AmqpSource
from poc.source.connection import AmqpSettings, control_queue_name, dead_letter_queue_name
from poc.source.publish import build_control, build_text, publish

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

LIMITS = MessageLimits(max_body_bytes=10_000, max_text_chars=50)


class Sink:
    """Records what the adapter asked of the pipeline; jobs are settled by the test."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.urgent: dict[str, bool] = {}
        self.clears = 0

    def submit(self, job: Job, *, urgent: bool = False) -> None:
        self.jobs.append(job)
        self.urgent[job.id] = urgent

    def interrupt(self) -> None:
        pass

    def clear(self) -> int:
        self.clears += 1
        return sum(job.settle(Outcome.DROPPED, "cleared") for job in self.jobs)

    def ids(self) -> list[str]:
        return [job.id for job in self.jobs]

    def job(self, job_id: str) -> Job:
        [job] = [job for job in self.jobs if job.id == job_id]
        return job


class Switch:
    """A StreamSwitch as the service implements it: a stop hands every held job back."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.stops = 0

    async def stop_stream(self) -> int | None:
        self.stops += 1
        return sum(job.settle(Outcome.REQUEUED, "stopped") for job in self.sink.jobs)

    async def start_stream(self) -> float | None:
        return 0.0


def make_source(
    settings: AmqpSettings, queue: str, sink: Sink, switch: Switch | None = None
) -> AmqpSource:
    return AmqpSource(
        settings,
        sink,
        LIMITS,
        queue=queue,
        prefetch=4,
        reconnect_interval=0.2,
        stream=switch or Switch(sink),
    )


async def interrupting(settings: AmqpSettings, queue: str, words: str) -> str:
    return await publish(settings, build_text(words, interrupt=True), queue, control=True)


async def control(settings: AmqpSettings, queue: str, action: str) -> None:
    await publish(settings, build_control(action), queue, control=True)


async def test_an_interrupting_message_cuts_in_ahead_of_a_backlog(
    settings: AmqpSettings, queue: str, channel: AbstractChannel
) -> None:
    sink = Sink()
    backlog = [await publish(settings, build_text(f"queued {i}"), queue) for i in range(6)]
    async with running(make_source(settings, queue, sink)):
        await eventually(lambda: len(sink.jobs) == 4)  # the prefetch window is full
        urgent = await interrupting(settings, queue, "Breaking news.")
        await eventually(lambda: urgent in sink.ids())
        assert sink.urgent[urgent] is True
        assert sink.ids() == backlog[:4] + [urgent]  # nothing from the backlog got ahead of it
        assert await ready(channel, control_queue_name(queue)) == 0
        assert not sink.job(urgent).is_settled  # held, unacked until it settles
        sink.job(urgent).settle(Outcome.PLAYED)
        sink.jobs[0].settle(Outcome.INTERRUPTED)
    assert await ready(channel, dead_letter_queue_name(queue)) == 0
    # Settled before the stop: acked for good; the unsettled backlog is back in the main queue.
    assert await ready(channel, control_queue_name(queue)) == 0
    await wait_ready(channel, queue, 5)


async def test_a_clear_drops_one_held_before_it_but_not_one_sent_after(
    settings: AmqpSettings, queue: str, channel: AbstractChannel
) -> None:
    sink = Sink()
    async with running(make_source(settings, queue, sink)):
        before = await interrupting(settings, queue, "before the clear")
        await eventually(lambda: before in sink.ids())
        await control(settings, queue, "clear")
        await eventually(lambda: sink.clears == 1)
        assert sink.job(before).outcome is Outcome.DROPPED
        after = await interrupting(settings, queue, "after the clear")
        await eventually(lambda: after in sink.ids())
        assert not sink.job(after).is_settled
        sink.job(after).settle(Outcome.PLAYED)
    assert await ready(channel, control_queue_name(queue)) == 0
    assert await ready(channel, dead_letter_queue_name(queue)) == 0


async def test_while_stopped_an_interrupting_message_is_dead_lettered_not_looped(
    settings: AmqpSettings, queue: str, channel: AbstractChannel
) -> None:
    sink = Sink()
    dlq = dead_letter_queue_name(queue)
    async with running(make_source(settings, queue, sink)):
        await control(settings, queue, "stop")
        await interrupting(settings, queue, "nobody is listening")
        await wait_ready(channel, dlq, 1)
        dead = await (await channel.declare_queue(dlq, passive=True)).get(no_ack=True)
        assert "the stream is stopped: send start first" in str(dead.headers["x-error"])
        assert dead.headers["x-original-queue"] == control_queue_name(queue)
        assert sink.jobs == []
        # Once started again, one is taken as usual.
        await control(settings, queue, "start")
        later = await interrupting(settings, queue, "back on air")
        await eventually(lambda: later in sink.ids())
        sink.job(later).settle(Outcome.PLAYED)
    assert await ready(channel, control_queue_name(queue)) == 0
    assert await ready(channel, dlq) == 0


async def test_shutdown_hands_an_unsettled_one_back_to_the_control_queue(
    settings: AmqpSettings, queue: str, channel: AbstractChannel
) -> None:
    sink = Sink()
    async with running(make_source(settings, queue, sink)):
        urgent = await interrupting(settings, queue, "not played yet")
        await eventually(lambda: urgent in sink.ids())
    await wait_ready(channel, control_queue_name(queue), 1)

    again = Sink()
    async with running(make_source(settings, queue, again)):
        await eventually(lambda: again.ids() == [urgent])
        again.job(urgent).settle(Outcome.PLAYED)
    assert await ready(channel, control_queue_name(queue)) == 0


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl")
async def test_a_held_one_redelivered_after_a_blip_is_not_spoken_twice(
    settings: AmqpSettings, queue: str, channel: AbstractChannel
) -> None:
    sink = Sink()
    async with running(make_source(settings, queue, sink)) as source:
        urgent = await interrupting(settings, queue, "through the storm")
        await eventually(lambda: urgent in sink.ids())
        await anyio.to_thread.run_sync(close_connection_of, queue)
        await eventually(lambda: source.status.reconnects == 1)
        # The broker redelivers it; a marker after it shows what reached the sink since.
        marker = await interrupting(settings, queue, "marker")
        await eventually(lambda: marker in sink.ids())
        assert sink.ids() == [urgent, marker]
        sink.job(urgent).settle(Outcome.PLAYED)  # its old ack fails; the redelivery is acked
        sink.job(marker).settle(Outcome.PLAYED)
    assert await ready(channel, control_queue_name(queue)) == 0


@pytest.mark.parametrize("action", ["clear", "stop"])
async def test_a_control_after_a_flood_of_interrupting_messages_is_still_acted_on(
    settings: AmqpSettings, queue: str, channel: AbstractChannel, action: str
) -> None:
    sink = Sink()
    switch = Switch(sink)
    async with running(make_source(settings, queue, sink, switch)):
        for i in range(20):
            await interrupting(settings, queue, f"flash {i}")
        await control(settings, queue, action)
        # Nothing settles the held ones here (the worst case: a pipeline too slow to start
        # any of them); the control must still get through.
        await eventually(lambda: sink.clears + switch.stops == 1)
        assert all(job.is_settled for job in sink.jobs)
    # None is left for redelivery: each was taken and dropped/handed back, or dead-lettered.
    dead = await ready(channel, dead_letter_queue_name(queue))
    assert dead > 0 and len(sink.jobs) + dead >= 20
