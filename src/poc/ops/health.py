"""/healthz and /metrics.

/healthz is 200 while frames are leaving for the RTMP server, 503 while they should be and are
not (ffmpeg or the server down). A stream an operator stopped on purpose (the `stop` control) is
200 with `"stream": "stopped by operator"`: the service is fine and doing what it was told, and
a 503 would make a kubelet restart it (putting it back on air against the operator's wish) or a
load balancer page someone. `on_air` is false then, and `poc_stream_on_air` is 0.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from poc.ops.http import HttpServer, Request, Response, json_response

if TYPE_CHECKING:
    from poc.app import Service


def health_report(service: "Service") -> dict:
    source = service.source
    status = getattr(source, "status", None)
    up, stopped = service.writer.up, service.stopped_by_operator
    return {
        "healthy": up or stopped,
        "on_air": up,
        "stream": "stopped by operator" if stopped else "on air" if up else "off air",
        "state": service.pipeline.chart.state_id,
        "frame": service.pipeline.compositor.frame,
        "uptime_seconds": round(time.monotonic() - service.started_at, 1),
        "writer_restarts": service.writer.restarts,
        "dropped_frames": service.writer.dropped,
        "underrun_frames": service.pipeline.compositor.underruns,
        "queued_messages": len(service.pipeline.queued_jobs),
        "queued_speech_seconds": round(service.pipeline.queued_seconds(), 2),
        "rabbitmq_connected": bool(getattr(status, "connected", False)),
        "speech": service.speech.report(),
        "face": service.hosted.name if service.hosted is not None else service.settings.talking_face_model,
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
