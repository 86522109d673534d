"""Connecting to RabbitMQ: the settings, the queue names derived from the main queue, and
errors described in one stable line without the password (start-up retries log again only
when the text changes)."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING
from urllib.parse import quote

import aio_pika
import attrs

if TYPE_CHECKING:
    from poc.config import Settings

CONNECT_TIMEOUT_S = 10.0
# aio-pika/aiormq log every reconnect attempt; these loggers get the RepeatFilter below.
CHATTY_LOGGERS = ("aiormq.connection", "aio_pika.robust_connection", "aio_pika.connection")


@attrs.frozen
class AmqpSettings:
    host: str = "127.0.0.1"
    port: int = 5672
    user: str = "guest"
    password: str = attrs.field(default="guest", repr=False)
    vhost: str = "/"
    queue: str = "talking_face_input"
    use_tls: bool = False

    @classmethod
    def from_settings(cls, settings: "Settings") -> "AmqpSettings":
        """The broker part of the service's settings (RABBITMQ_*)."""
        return cls(
            host=settings.rabbitmq_host,
            port=settings.rabbitmq_port,
            user=settings.rabbitmq_user,
            password=settings.rabbitmq_password.get_secret_value(),
            vhost=settings.rabbitmq_vhost,
            queue=settings.rabbitmq_queue,
            use_tls=settings.rabbitmq_tls,
        )

    def url_for_logs(self) -> str:
        scheme = "amqps" if self.use_tls else "amqp"
        return f"{scheme}://{self.user}:***@{self.host}:{self.port}/{quote(self.vhost, safe='')}"

    def connect_kwargs(self) -> dict[str, object]:
        """Keyword arguments for aio_pika.connect / connect_robust."""
        return dict(
            host=self.host,
            port=self.port,
            login=self.user,
            password=self.password,
            virtualhost=self.vhost,
            ssl=self.use_tls,
            timeout=CONNECT_TIMEOUT_S,
        )


def control_queue_name(queue: str) -> str:
    return f"{queue}.control"


def dead_letter_queue_name(queue: str) -> str:
    return f"{queue}.dlq"


def describe_connect_error(exc: BaseException, settings: AmqpSettings) -> str:
    """One stable line for a failed connection attempt, never containing the password.

    Stable matters: start-up retries log again only when this text changes.
    """
    text = str(exc)
    if isinstance(exc, aio_pika.exceptions.ProbableAuthenticationError) or "ACCESS_REFUSED" in text:
        line = f"login refused for user {settings.user!r} (wrong user or password?)"
    elif isinstance(exc, aio_pika.exceptions.InvalidFrameError) and "Connection.Close" in text:
        # RabbitMQ answers a bad virtual host with a bare Connection.Close during open.
        line = (
            f"broker refused virtual host {settings.vhost!r} "
            f"(does it exist, and may {settings.user!r} use it?)"
        )
    elif isinstance(exc, aio_pika.exceptions.ConnectionClosed):
        line = f"broker closed the connection ({exc.strerror or text})"
    elif isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        line = f"no answer from {settings.host}:{settings.port} within {CONNECT_TIMEOUT_S:g} s"
    elif isinstance(exc, OSError) and exc.errno == 111:
        line = f"connection refused by {settings.host}:{settings.port} (is RabbitMQ running?)"
    elif isinstance(exc, OSError):
        line = f"{settings.host}:{settings.port}: {exc.strerror or text}"
    else:
        line = f"{type(exc).__name__}: {text}"
    if settings.password:
        line = line.replace(settings.password, "***")
    line = re.sub(r" at 0x[0-9a-f]+", "", line)  # object addresses would defeat the de-duplication
    return " ".join(line.split())[:300]


class RepeatFilter(logging.Filter):
    """Mutes aio-pika's per-attempt log lines: all of them while we connect at start-up (we log
    our own single line), and repeats of the same line during an outage afterwards."""

    def __init__(self) -> None:
        super().__init__()
        self.mute = True
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.mute:
            return False
        try:
            key = re.sub(r"0x[0-9a-f]+|\d+", "#", record.getMessage())
        except Exception:  # a record that cannot be formatted is not ours to judge
            return True
        if key in self._seen:
            return False
        if len(self._seen) > 100:
            self._seen.clear()
        self._seen.add(key)
        return True

    def reset(self) -> None:
        self._seen.clear()
