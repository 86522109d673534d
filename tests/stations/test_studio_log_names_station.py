"""With many stations, what a station's studio logs must say which station it was for: an
operator reading "studio: sent text message 5e64..." in a log that three stations share cannot
tell which stream will speak it. Lines logged on a station's behalf carry `[NAME] ` (poc.ops.logs
StationPrefix, installed by `run --stations`); the studio's requests are on its behalf too.
The real stations app on a real socket, with the stations app's own publisher hook."""

from __future__ import annotations

import logging

import httpx
import pytest
from support.operator import StandInService, make_settings, serving

from poc.ops.stations_http import StationView, stations_app

pytestmark = pytest.mark.anyio


def view(name: str) -> StationView:
    service = StandInService(make_settings(RTMP_URL=f"rtmp://127.0.0.1:1935/live/{name}key"))
    return StationView(name=name, settings=service.settings, status=service.status, metrics=service.metrics,
                       chart=service.chart)  # fmt: skip


def accepting_publisher(_: StationView):
    async def publish(body: dict, control: bool) -> str:
        return str(body["id"])

    return publish


async def test_a_line_sent_from_a_stations_studio_is_logged_under_that_stations_name(named_lines):
    current = {"lobby": view("lobby"), "shop": view("shop")}
    app = stations_app(make_settings(), lambda: current, publisher_for=accepting_publisher, batchers=lambda: [])
    with named_lines.at_level(logging.INFO, logger="poc.ops.studio"):
        async with serving(app) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            said = await http.post("/stations/shop/api/say", json={"text": "For the shop."})
            cleared = await http.post("/stations/lobby/api/control", json={"action": "clear"})
    assert said.status_code == 202 and cleared.status_code == 202
    sent = [record.getMessage() for record in named_lines.records if "studio: sent" in record.getMessage()]
    assert len(sent) == 2, sent
    assert sent[0].startswith("[shop] studio: sent text message "), sent
    assert sent[1].startswith("[lobby] studio: sent control message "), sent
