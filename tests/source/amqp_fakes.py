"""Test doubles and helpers for the RabbitMQ adapter tests (imported by them; no fixtures)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from poc.jobs import Job, Outcome
from poc.source.amqp import AmqpSource


class Broker:
    """The test's own view of the broker: queue depths and the dead-letter queue's content."""

    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel

    async def ready(self, name: str) -> int:
        """Messages waiting in `name` (delivered-but-unacked ones are not counted)."""
        declared = await self.channel.declare_queue(name, passive=True)
        return declared.declaration_result.message_count or 0

    async def drain(self, name: str) -> list[AbstractIncomingMessage]:
        queue = await self.channel.declare_queue(name, passive=True)
        messages = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            messages.append(message)
        return messages


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


async def eventually(check: Callable[[], object], timeout: float = 5.0) -> None:
    """Wait until check() is truthy (the broker is real, so this polls)."""
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.01)


async def eventually_async(check: Callable[[], Awaitable[object]], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not await check():
            await anyio.sleep(0.02)


@asynccontextmanager
async def running(source: AmqpSource) -> AsyncIterator[AmqpSource]:
    """Run the source until the block ends, then cancel it as the service's shutdown would."""
    async with anyio.create_task_group() as tg:
        await tg.start(source.run)
        yield source
        tg.cancel_scope.cancel()

