"""One stream's operator port follows the Service on air: when the host rebuilds a station that
failed on air (a new Service, with its own status, registry and chart), /healthz and /metrics
report the new one, not the dead one forever (a probe would otherwise restart a healthy
process, and the numbers would stop at the failure)."""

from __future__ import annotations

import socket
from types import SimpleNamespace
from typing import Any

import anyio
import httpx
import pytest
from support.operator import StandInService, make_settings

from poc.host import Host, _OnAir

pytestmark = pytest.mark.anyio


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def as_service(stand_in: StandInService) -> Any:
    return SimpleNamespace(status=stand_in.status, metrics=stand_in.metrics, pipeline=SimpleNamespace(chart=stand_in.chart))


async def test_health_and_metrics_follow_a_rebuilt_single_station():
    port = free_port()
    host = Host(make_settings(HTTP_PORT=str(port)))
    failed = StandInService(host.settings, on_air=False)  # its writer closed when it failed
    failed.metrics.frames.inc(100)
    first = as_service(failed)
    async with anyio.create_task_group() as tg:
        await host._serve_http(tg, first)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            assert (await http.get("/healthz")).status_code == 503
            rebuilt = StandInService(host.settings)  # on air
            rebuilt.metrics.frames.inc(7)
            host.on_air[""] = _OnAir("", None, as_service(rebuilt))  # what _supervise does on a rebuild
            health = await http.get("/healthz")
            assert health.status_code == 200 and health.json()["on_air"] is True
            metrics = (await http.get("/metrics")).text
            assert "poc_frames_total 7.0" in metrics, "the numbers are still the failed Service's"
        tg.cancel_scope.cancel()
