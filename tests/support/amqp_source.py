"""What the RabbitMQ adapter's tests share: the broker's queue depth, the adapter run in a task
group, and pipelines that only record what the adapter asks of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from poc.jobs import Job, Outcome
from poc.source.amqp import AmqpSource


async def ready(channel: AbstractChannel, name: str) -> int:
    """Messages waiting in `name` (delivered-but-unacked ones are not counted)."""
    declared = await channel.declare_queue(name, passive=True)
    return declared.declaration_result.message_count or 0


async def drain(channel: AbstractChannel, name: str) -> list[AbstractIncomingMessage]:
    queue = await channel.declare_queue(name, passive=True)
    messages = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        messages.append(message)
    return messages


async def wait_ready(channel: AbstractChannel, name: str, count: int, timeout: float = 10.0) -> None:
    """Wait until `name` holds at least `count` messages (the broker is real, so this polls)."""
    with anyio.fail_after(timeout):
        while await ready(channel, name) < count:
            await anyio.sleep(0.02)


@asynccontextmanager
async def running(source: AmqpSource) -> AsyncIterator[AmqpSource]:
    """Run the source until the block ends, then cancel it as the service's shutdown would."""
    async with anyio.create_task_group() as tg:
        await tg.start(source.run)
        yield source
        tg.cancel_scope.cancel()


class FakeSink:
    """Records what the adapter asked of the pipeline; jobs are settled by the test."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.urgent: list[bool] = []
        self.interrupts = 0
        self.clears = 0

    def submit(self, job: Job, *, urgent: bool = False) -> None:
        self.jobs.append(job)
        self.urgent.append(urgent)

    def interrupt(self) -> None:
        self.interrupts += 1

    def clear(self) -> int:
        self.clears += 1
        return sum(job.settle(Outcome.DROPPED) for job in self.jobs)


class BrokenSink(FakeSink):
    """A pipeline with a bug: it raises on every job."""

    def submit(self, job: Job, *, urgent: bool = False) -> None:
        raise RuntimeError("pipeline bug")
