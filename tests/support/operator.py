"""The operator's port in process: a stand-in service behind the real app, served for real.

The stand-in provides what the port reads from a running Service: settings, the real metrics
(poc.metrics.Metrics) and statechart, and a status function whose media numbers the test sets.
Everything from the app inwards is poc's own (Starlette routes, guards, hypercorn, sockets).
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import anyio
import attrs
from starlette.types import ASGIApp

from poc.config import Settings, load_settings
from poc.metrics import Metrics
from poc.ops.http import serve
from poc.ops.operator import operator_app
from poc.ops.status import ServiceStatus
from poc.ops.studio import Publisher
from poc.statechart import StreamChart


class RecordingPublisher:
    """Stands for RabbitMQ behind the studio: keeps each body the page would have published."""

    def __init__(self) -> None:
        self.sent: list[dict] = []

    async def __call__(self, body: dict, control: bool) -> str:
        self.sent.append(body)
        return str(body["id"])


def make_settings(**env: str) -> Settings:
    return load_settings(environ={}, env_file=Path("/nonexistent"), overrides=env, check_files=False)


@attrs.define
class StandInService:
    settings: Settings
    metrics: Metrics = attrs.field(factory=Metrics)
    chart: StreamChart = attrs.field(factory=StreamChart)
    on_air: bool = True
    stopped: bool = False
    writer_restarts: int = 0
    underrun_frames: int = 3
    queued_seconds: float = 1.234
    broken: bool = False  # the snapshot raises, as a bug in it would
    face_resting_seconds: float | None = None

    def status(self) -> ServiceStatus:
        if self.broken:
            raise AttributeError("'Writer' object has no attribute 'up'")
        figures = self.metrics.figures
        return ServiceStatus(
            state=self.chart.state_id, frame=900, on_air=self.on_air, stopped=self.stopped, uptime_seconds=12.34,
            writer_restarts=self.writer_restarts, dropped_frames=0, underrun_frames=self.underrun_frames,
            queued_messages=0, queued_seconds=self.queued_seconds, rabbitmq_connected=True, rabbitmq_reconnects=2,
            output_fps=figures.output_fps, last_latency_seconds=figures.last_latency_seconds,
            mean_latency_seconds=figures.mean_latency_seconds, messages=dict(figures.outcomes),
            speech={"serving": "espeak", "providers": []}, face="warp",
            face_resting_seconds=self.face_resting_seconds,
        )  # fmt: skip

    def app(self, publisher: Publisher | None = None) -> ASGIApp:
        return operator_app(self.settings, self.status, self.metrics, self.chart, publisher=publisher)


@asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[int]:
    """Serve `app` on a free loopback port for the block; yields the port."""
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, app, "127.0.0.1", 0)
        yield port
        tg.cancel_scope.cancel()


async def call(port: int, method: str, path: str, body: object = None, headers: dict | None = None):
    """One HTTP/1.1 request on its own connection; returns (status, headers, body bytes)."""
    payload = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    head = {"Host": f"127.0.0.1:{port}", "Content-Length": str(len(payload)), "Connection": "close"}
    if body is not None:
        head["Content-Type"] = "application/json"
    head.update(headers or {})
    text = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n"
    with anyio.fail_after(10):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(text.encode() + payload)
            data = await read_to_end(stream)
    head_text, _, content = data.partition(b"\r\n\r\n")
    lines = head_text.decode("latin-1").split("\r\n")
    found = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), found, content


async def read_to_end(stream) -> bytes:
    data = b""
    try:
        while True:
            data += await stream.receive()
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        return data


class EventReader:
    """Reads an HTTP response head, then server-sent events (chunked framing ignored: the
    chunk-size lines never contain ': ' and carry no `event:` field)."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.buffer = b""

    async def head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += await self.stream.receive()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        return head

    async def events(self, wanted: int) -> list[tuple[str, dict]]:
        found: list[tuple[str, dict]] = []
        while len(found) < wanted:
            while b"\n\n" not in self.buffer:
                self.buffer += await self.stream.receive()
            block, self.buffer = self.buffer.split(b"\n\n", 1)
            fields = dict(line.split(": ", 1) for line in block.decode().split("\n") if ": " in line)
            if "event" in fields:
                found.append((fields["event"], json.loads(fields["data"])))
        return found
