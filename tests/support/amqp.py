"""Talk to the real RabbitMQ from tests (synchronously, each call its own connection)."""

from __future__ import annotations

import asyncio
import json
import subprocess

import aio_pika

URL = "amqp://guest:guest@127.0.0.1:5672/"


def publish(queue: str, body: dict | bytes, message_id: str | None = None) -> None:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()

    async def go() -> None:
        connection = await aio_pika.connect(URL)
        async with connection:
            channel = await connection.channel()
            await channel.declare_queue(queue, durable=True)
            await channel.default_exchange.publish(
                aio_pika.Message(payload, message_id=message_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue,
            )

    asyncio.run(go())


def message_count(queue: str) -> int:
    async def go() -> int:
        connection = await aio_pika.connect(URL)
        async with connection:
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, durable=True, passive=True)
            return declared.declaration_result.message_count or 0

    return asyncio.run(go())


def drain(queue: str) -> list[tuple[bytes, dict]]:
    """Take every message waiting in `queue` (body, headers)."""

    async def go() -> list[tuple[bytes, dict]]:
        connection = await aio_pika.connect(URL)
        out = []
        async with connection:
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, durable=True)
            while (message := await declared.get(no_ack=True, fail=False)) is not None:
                out.append((message.body, dict(message.headers or {})))
        return out

    return asyncio.run(go())


def delete(*queues: str) -> None:
    async def go() -> None:
        connection = await aio_pika.connect(URL)
        async with connection:
            channel = await connection.channel()
            for queue in queues:
                await channel.queue_delete(queue)

    asyncio.run(go())


def close_connection_of(queue: str) -> None:
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
