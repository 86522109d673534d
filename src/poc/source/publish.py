"""Producing messages: the body builders and a one-shot publish (for `poc send` and tests).

Builders return plain dicts that follow the contract in poc.messages, so a caller can inspect
or extend them before publishing. Speech goes to the main queue, control to `<queue>.control`
(the consumer reads that one on its own channel so control is never stuck behind speech), and
so may interrupting speech, so it cuts in without waiting behind the main queue's backlog.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import anyio
from aio_pika.abc import AbstractRobustConnection

from poc.messages import AUDIO_FORMATS, CONTROL_ACTIONS
from poc.source.connection import AmqpSettings, control_queue_name, describe_connect_error


class PublishError(RuntimeError):
    """Publishing failed; str() is one line without the password."""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _extras(
    interrupt: bool, voice: str | None, language: str | None, session_id: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"id": uuid.uuid4().hex, "timestamp": _now()}
    if session_id is not None:
        body["session_id"] = session_id
    if voice is not None:
        body["voice"] = voice
    if language is not None:
        body["language"] = language
    if interrupt:
        body["interrupt"] = True
    return body


def build_text(
    text: str,
    interrupt: bool = False,
    voice: str | None = None,
    language: str | None = None,
    session_id: str | None = None,
) -> dict[str, Any]:
    """A text message; `interrupt` cuts the current speech and plays this next."""
    return {"type": "text", "data": text, **_extras(interrupt, voice, language, session_id)}


def build_audio(
    path: Path,
    interrupt: bool = False,
    session_id: str | None = None,
) -> dict[str, Any]:
    """An audio message from a file; the format is taken from the suffix (.wav, .mp3, ...)."""
    fmt = path.suffix.lower().lstrip(".")
    if fmt == "oga":
        fmt = "ogg"
    if fmt not in AUDIO_FORMATS:
        raise ValueError(
            f"{path.name}: unsupported audio suffix {path.suffix!r} "
            f"(use one of: {', '.join('.' + f for f in AUDIO_FORMATS)})"
        )
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return {
        "type": "audio",
        "data": data,
        "format": fmt,
        **_extras(interrupt, None, None, session_id),
    }


def build_control(action: str) -> dict[str, Any]:
    """A control message: `interrupt` (stop current speech), `clear` (also drop the queue),
    `stop` (take the stream off air; messages wait in the queue) or `start` (back on air)."""
    if action not in CONTROL_ACTIONS:
        choices = ", ".join(CONTROL_ACTIONS)
        raise ValueError(f"unknown control action {action!r} (use one of: {choices})")
    return {"type": "control", "action": action, "id": uuid.uuid4().hex, "timestamp": _now()}


async def publish(
    settings: AmqpSettings,
    body: dict[str, Any] | bytes,
    queue: str | None = None,
    control: bool = False,
) -> str:
    """Publish one persistent message and wait for the broker's confirm; returns its id.

    `queue` defaults to settings.queue; `control=True` sends to its `.control` queue. The
    queue is declared (durable) first, so publishing before the service ever ran still works.
    Bytes are sent as they are (to exercise the dead-letter path); dicts as JSON.
    Raises PublishError on any broker problem (asyncio only: aio-pika).
    """
    target = queue or settings.queue
    if control:
        target = control_queue_name(target)
    if isinstance(body, bytes):
        payload, msg_id = body, uuid.uuid4().hex
    else:
        payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        msg_id = str(body.get("id") or uuid.uuid4().hex)
    try:
        connection = await _connect(settings)
    except Exception as exc:
        raise PublishError(
            f"cannot publish to RabbitMQ at {settings.url_for_logs()}: "
            f"{describe_connect_error(exc, settings)}"
        ) from None
    try:
        channel = await connection.channel()
        await channel.declare_queue(target, durable=True)
        await channel.default_exchange.publish(
            aio_pika.Message(
                body=payload,
                content_type="application/json",
                message_id=msg_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=target,
        )
    except Exception as exc:
        raise PublishError(
            f"publishing to {target!r} failed: {describe_connect_error(exc, settings)}"
        ) from None
    finally:
        await _close(connection)
    return msg_id


# Connections whose opening outlived the publish that asked for them, closed once open.
_LATE_CLOSES: set[asyncio.Future[Any]] = set()
CLOSE_BUDGET_S = 2.0


async def _connect(settings: AmqpSettings) -> AbstractRobustConnection:
    """Connect; a caller cancelled mid-connect (a publish deadline) still gets the connection
    closed once it opens. aio-pika cancelled half-way leaves it open on the broker for good."""
    opening = asyncio.ensure_future(aio_pika.connect(**settings.connect_kwargs()))  # type: ignore[arg-type]
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        _LATE_CLOSES.add(opening)
        opening.add_done_callback(_close_when_open)
        raise


def _close_when_open(opening: asyncio.Future[Any]) -> None:
    if opening.cancelled() or opening.exception() is not None:
        _LATE_CLOSES.discard(opening)
        return
    closing = asyncio.ensure_future(_close(opening.result()))
    _LATE_CLOSES.add(closing)
    closing.add_done_callback(_LATE_CLOSES.discard)
    _LATE_CLOSES.discard(opening)


async def _close(connection: AbstractRobustConnection) -> None:
    """Close even when the publish was cancelled: the caller's deadline (a level-triggered
    anyio scope) would otherwise cancel the close too and leave the connection open."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_BUDGET_S):
        try:
            await connection.close()
        except Exception:
            pass  # the broker went away: nothing left open to close
