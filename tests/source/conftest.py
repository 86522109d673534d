"""Fixtures for the RabbitMQ adapter tests: the real local broker and one queue set per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel

from poc.source.connection import AmqpSettings, control_queue_name, dead_letter_queue_name

BROKER = AmqpSettings(host="127.0.0.1", port=5672, user="guest", password="guest", vhost="/")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aio-pika runs on asyncio only


@pytest.fixture(scope="session")
def settings(rabbitmq: str) -> AmqpSettings:
    """The machine's RabbitMQ (the `rabbitmq` fixture makes sure it is running)."""
    return BROKER


@pytest.fixture
async def queue(settings: AmqpSettings) -> AsyncIterator[str]:
    """A fresh queue name; the queue, its .control and .dlq are deleted afterwards."""
    name = f"poc-test-{uuid.uuid4().hex[:12]}"
    yield name
    connection = await aio_pika.connect(**settings.connect_kwargs())  # type: ignore[arg-type]
    async with connection:
        channel = await connection.channel()
        for q in (name, control_queue_name(name), dead_letter_queue_name(name)):
            await channel.queue_delete(q)


@pytest.fixture
async def channel(settings: AmqpSettings) -> AsyncIterator[AbstractChannel]:
    """The test's own channel, to look at queues the way an operator would."""
    connection = await aio_pika.connect(**settings.connect_kwargs())  # type: ignore[arg-type]
    async with connection:
        yield await connection.channel()
