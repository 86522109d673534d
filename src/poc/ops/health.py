"""/healthz and /metrics: the open routes of the operator's port (no studio token needed).

/healthz is 200 while frames are leaving for the RTMP server, 503 while they should be and are
not (ffmpeg or the server down). A stream an operator stopped on purpose (the `stop` control) is
200 with `"stream": "stopped by operator"`: the service is fine and doing what it was told, and
a 503 would make a kubelet restart it (putting it back on air against the operator's wish) or a
load balancer page someone. `on_air` is false then, and `poc_stream_on_air` is 0.

/metrics is prometheus-client's own ASGI app over the service's registry (content negotiation,
gzip and the OpenMetrics format come with it); the gauges that describe a moment rather than a
count (speech queued ahead, RabbitMQ connection) are set from a fresh snapshot just before.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import make_asgi_app
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from poc.metrics import Metrics
from poc.ops.status import ServiceStatus, StatusSource

OPEN_PATHS = frozenset({"/healthz", "/metrics"})  # never behind the studio token


def health_report(status: ServiceStatus) -> dict[str, Any]:
    """The /healthz body; `healthy` decides its status code (200, else 503)."""
    up, stopped = status.on_air, status.stopped
    return {
        "healthy": up or stopped,
        "on_air": up,
        "stream": "stopped by operator" if stopped else "on air" if up else "off air",
        "state": status.state,
        "frame": status.frame,
        "uptime_seconds": round(status.uptime_seconds, 1),
        "writer_restarts": status.writer_restarts,
        "dropped_frames": status.dropped_frames,
        "underrun_frames": status.underrun_frames,
        "queued_messages": status.queued_messages,
        "queued_speech_seconds": round(status.queued_seconds, 2),
        "rabbitmq_connected": status.rabbitmq_connected,
        "speech": dict(status.speech),
        "face": status.face,
        "face_resting_seconds": None if status.face_resting_seconds is None else round(status.face_resting_seconds),
    }


def set_moment_gauges(metrics: Metrics, now: ServiceStatus) -> None:
    """Bring the gauges that describe a moment (not a count) up to `now`, just before a scrape."""
    metrics.queued_speech.set(now.queued_seconds)
    metrics.amqp_reconnects.set(now.rabbitmq_reconnects)
    metrics.amqp_connected.set(1 if now.rabbitmq_connected else 0)


class _MetricsApp:
    """prometheus-client's ASGI app, with the moment gauges brought up to date first. A class
    (not a function) so that Starlette routes to it as an ASGI app."""

    def __init__(self, metrics: Metrics, status: StatusSource) -> None:
        self.metrics = metrics
        self.status = status
        self.app = make_asgi_app(metrics.registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        set_moment_gauges(self.metrics, self.status())
        await self.app(scope, receive, send)


def health_routes(status: StatusSource, metrics: Metrics) -> list[Route]:
    """GET /healthz and GET /metrics over `status` (a fresh snapshot per call) and `metrics`."""

    async def healthz(request: Request) -> JSONResponse:
        report = health_report(status())
        return JSONResponse(report, status_code=200 if report["healthy"] else 503)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", _MetricsApp(metrics, status), methods=["GET"]),
    ]
