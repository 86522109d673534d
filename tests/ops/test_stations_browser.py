"""Many stations in a real browser (Debian's Chromium through Playwright): log in once, see the
station list, open one station and use its studio under /stations/NAME/ (relative URLs, its own
chart, its own queue). The real app and server in process over stand-in services; skipped
without /usr/bin/chromium, like tests/ops/test_studio_browser.py."""

from __future__ import annotations

import pytest
from anyio.from_thread import start_blocking_portal
from support.operator import StandInService, make_settings

from poc.ops.http import serve
from poc.ops.stations_http import StationView, stations_app

pytestmark = pytest.mark.integration

TOKEN = "stations-token-for-the-browser"


def test_the_list_opens_a_station_whose_studio_sends_to_that_station_only(browser):
    services = {name: StandInService(make_settings(RTMP_URL=f"rtmp://127.0.0.1:1935/live/{name}key"))
                for name in ("a", "b")}  # fmt: skip
    services["a"].on_air = False
    current = {name: StationView(name=name, settings=s.settings, status=s.status, metrics=s.metrics, chart=s.chart)
               for name, s in services.items()}  # fmt: skip
    sent: dict[str, list[str]] = {"a": [], "b": []}

    def publisher_for(view: StationView):
        async def publish(body: dict, control: bool) -> str:
            sent[view.name].append(body["data"])
            return str(body["id"])

        return publish

    settings = make_settings(HTTP_HOST="0.0.0.0", STUDIO_TOKEN=TOKEN)
    services["b"].chart.send("message_accepted")
    with start_blocking_portal() as portal:
        app = portal.call(lambda: stations_app(settings, lambda: current, publisher_for=publisher_for))
        served, port = portal.start_task(serve, app, "127.0.0.1", 0)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"http://127.0.0.1:{port}/stations/b/")
            assert page.url.endswith("/login?next=%2Fstations%2Fb%2F")
            page.fill("#token", TOKEN)
            page.click("button[type=submit]")
            # Back where the bookmark pointed, then to the list.
            page.wait_for_url(f"http://127.0.0.1:{port}/stations/b/", timeout=5_000)
            page.goto(f"http://127.0.0.1:{port}/")
            # The list: a row per station, kept fresh from the API.
            page.wait_for_selector("tr[data-station='b'] .stream[data-stream='on air']", timeout=10_000)
            assert page.text_content("tr[data-station='a'] .stream") == "off air"
            assert page.text_content("#count") == "2"
            services["a"].on_air = True
            page.wait_for_selector("tr[data-station='a'] .stream[data-stream='on air']", timeout=5_000)

            page.click("tr[data-station='b'] a")
            page.wait_for_url(f"http://127.0.0.1:{port}/stations/b/", timeout=5_000)
            # b's own chart (in processing; a is idle), lit through b's status and event stream.
            page.wait_for_selector("#chart .node.current[data-state='processing']", timeout=10_000)
            assert page.text_content("#video-note") == "HLS: http://127.0.0.1:8088/hls/bkey.m3u8"
            page.fill("#text", "Only for station b.")
            page.click("#say")
            page.wait_for_function("document.querySelector('#notice').textContent.startsWith('queued text')",
                                   timeout=5_000)  # fmt: skip
            assert sent == {"a": [], "b": ["Only for station b."]}
            portal.call(services["b"].chart.send, "frames_ready")
            page.wait_for_selector("#chart .node.current[data-state='transitioning']", timeout=5_000)
            assert errors == []
        finally:
            served.cancel()
