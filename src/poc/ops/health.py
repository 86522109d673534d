"""/healthz and /metrics."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from poc.ops.http import HttpServer, Request, Response, json_response

if TYPE_CHECKING:
    from poc.app import Service


def health_report(service: "Service") -> dict:
    source = service.source
    status = getattr(source, "status", None)
    return {
        "healthy": service.writer.up,
        "on_air": service.writer.up,
        "state": service.pipeline.chart.state_id,
        "frame": service.pipeline.compositor.frame,
        "uptime_seconds": round(time.monotonic() - service.started_at, 1),
        "writer_restarts": service.writer.restarts,
        "dropped_frames": service.writer.dropped,
        "underrun_frames": service.pipeline.compositor.underruns,
        "queued_messages": len(service.pipeline.queued_jobs),
        "queued_speech_seconds": round(service.pipeline.queued_seconds(), 2),
        "rabbitmq_connected": bool(getattr(status, "connected", False)),
    }


def install_routes(http: HttpServer, service: "Service") -> None:
    async def healthz(request: Request) -> Response:
        report = health_report(service)
        return json_response(200 if report["healthy"] else 503, report)

    async def metrics(request: Request) -> Response:
        service.metrics.queued_speech.set(service.pipeline.queued_seconds())
        status = getattr(service.source, "status", None)
        if status is not None:
            service.metrics.amqp_reconnects.set(status.reconnects)
            service.metrics.amqp_connected.set(1 if status.connected else 0)
        return 200, "text/plain; version=0.0.4; charset=utf-8", service.metrics.render()

    http.route("GET", "/healthz", healthz)
    http.route("GET", "/metrics", metrics)
