"""/healthz and /metrics over a status snapshot: the codes probes act on, and the registry as
prometheus-client serves it. The real app on a real socket, on asyncio and trio."""

from __future__ import annotations

import re

import httpx
import pytest
from support.operator import StandInService, make_settings, serving

pytestmark = pytest.mark.anyio


async def get(service: StandInService, path: str, **headers: str) -> httpx.Response:
    async with serving(service.app()) as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            return await http.get(path, headers=headers)


@pytest.mark.parametrize(
    ("on_air", "stopped", "code", "stream"),
    [(True, False, 200, "on air"), (False, False, 503, "off air"), (False, True, 200, "stopped by operator")],
)
async def test_healthz_is_503_only_when_the_stream_should_be_on_air_and_is_not(on_air, stopped, code, stream):
    service = StandInService(make_settings(), on_air=on_air, stopped=stopped)
    response = await get(service, "/healthz")
    report = response.json()
    assert response.status_code == code
    assert (report["healthy"], report["on_air"], report["stream"]) == (code == 200, on_air, stream)
    assert report["state"] == "idle" and report["frame"] == 900 and report["underrun_frames"] == 3
    assert report["queued_speech_seconds"] == 1.23 and report["rabbitmq_connected"] is True
    assert report["speech"] == {"serving": "espeak", "providers": []} and report["face"] == "warp"
    assert report["face_resting_seconds"] is None


async def test_healthz_says_how_long_a_failing_face_vendor_rests():
    """Every message falls back to the local engine while the vendor rests: /metrics counts the
    failures, /healthz says the vendor is not being asked and for how long."""
    report = (await get(StandInService(make_settings(), face_resting_seconds=29.6), "/healthz")).json()
    assert report["face_resting_seconds"] == 30 and report["healthy"] is True


async def test_metrics_serve_the_registry_with_the_moment_gauges_taken_at_scrape_time():
    service = StandInService(make_settings(), queued_seconds=4.5)
    service.metrics.frames.inc(7)
    service.metrics.message_on_air(0.4)
    response = await get(service, "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text

    def value(name: str) -> float:
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        assert found, name
        return float(found.group(1))

    assert value("poc_frames_total") == 7
    assert value("poc_queued_speech_seconds") == 4.5  # set from the snapshot when scraped
    assert value("poc_amqp_connected") == 1 and value("poc_amqp_reconnects") == 2
    assert value('poc_message_latency_seconds_count{stage="on_air"}') == 1


async def test_metrics_speak_openmetrics_when_asked():
    response = await get(StandInService(make_settings()), "/metrics", accept="application/openmetrics-text")
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")
