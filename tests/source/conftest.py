"""Fixtures for the RabbitMQ adapter tests: the real local broker and one queue set per test."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from amqp_fakes import Broker, FakeSink

from poc.source.amqp import AmqpSettings, control_queue_name, dead_letter_queue_name

BROKER = AmqpSettings(host="127.0.0.1", port=5672, user="guest", password="guest", vhost="/")


def _broker_up() -> bool:
    try:
        with socket.create_connection((BROKER.host, BROKER.port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aio-pika runs on asyncio only


@pytest.fixture(scope="session")
def settings() -> AmqpSettings:
    if not _broker_up():
        pytest.skip("RabbitMQ is not listening on 127.0.0.1:5672")
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
async def broker(settings: AmqpSettings) -> AsyncIterator[Broker]:
    connection = await aio_pika.connect(**settings.connect_kwargs())  # type: ignore[arg-type]
    async with connection:
        yield Broker(await connection.channel())


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()
