"""The studio page over a long day, in a real browser (Debian's Chromium through Playwright):
the service going away and coming back, a station removed while its page is open, a token
changed under an open page. The real app and server in process over stand-in services (the
server is stopped and started again on the same port); skipped without /usr/bin/chromium,
like tests/ops/test_studio_browser.py."""

from __future__ import annotations

import time

import pytest
from anyio.from_thread import start_blocking_portal
from support.operator import RecordingPublisher, StandInService, make_settings

from poc.ops.http import serve
from poc.ops.stations_http import StationView, stations_app

pytestmark = pytest.mark.integration

WAIT_MS = 10_000


def stop(served) -> None:
    """Stop a server started with portal.start_task (its port closes a moment later)."""
    served.cancel()


def serve_again(portal, app, port: int):
    """Serve `app` on the port a stopped server had, once that server has let go of it."""
    deadline = time.monotonic() + 15
    while True:
        try:
            served, _ = portal.start_task(serve, app, "127.0.0.1", port)
            return served
        except OSError:  # still shutting down (its grace period)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_the_page_says_when_the_service_is_gone_and_recovers_when_it_is_back(browser):
    service = StandInService(make_settings())
    with start_blocking_portal() as portal:
        served, port = portal.start_task(serve, portal.call(service.app, RecordingPublisher()), "127.0.0.1", 0)
        try:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#air[data-air='on_air']", timeout=WAIT_MS)

            stop(served)  # the service restarts: its port refuses connections for a while
            # The badge must not keep saying ON AIR about a service that does not answer.
            page.wait_for_selector("#air[data-air='lost']", timeout=WAIT_MS)
            assert "did not answer" in page.text_content("#link")

            service.stopped = True  # the new process comes up (stopped, to tell it apart)
            served = serve_again(portal, portal.call(service.app, RecordingPublisher()), port)
            page.wait_for_selector("#air[data-air='stopped']", timeout=WAIT_MS)  # by itself, no reload
            assert page.text_content("#link") == ""
            # Live again: a transition reaches the page through the event stream.
            portal.call(service.chart.send, "message_accepted")
            page.wait_for_selector("#chart .node.current[data-state='processing']", timeout=WAIT_MS)
        finally:
            stop(served)


def test_a_station_removed_while_its_page_is_open_is_named_and_its_return_picked_up(browser):
    services = {name: StandInService(make_settings(RTMP_URL=f"rtmp://127.0.0.1:1935/live/{name}key"))
                for name in ("a", "b")}  # fmt: skip
    views = {name: StationView(name=name, settings=s.settings, status=s.status, metrics=s.metrics, chart=s.chart)
             for name, s in services.items()}  # fmt: skip
    current = dict(views)

    async def publish(body: dict, control: bool) -> str:
        return str(body["id"])

    with start_blocking_portal() as portal:
        app = portal.call(lambda: stations_app(make_settings(), lambda: current, publisher_for=lambda view: publish))
        served, port = portal.start_task(serve, app, "127.0.0.1", 0)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"http://127.0.0.1:{port}/stations/b/")
            page.wait_for_selector("#air[data-air='on_air']", timeout=WAIT_MS)

            del current["b"]  # a reload drops station b; its open event stream is ended
            page.wait_for_selector("#air[data-air='lost']", timeout=WAIT_MS)
            assert "no station named 'b'" in page.text_content("#link")

            services["b"].stopped = True
            current["b"] = views["b"]  # and a later reload brings it back
            page.wait_for_selector("#air[data-air='stopped']", timeout=WAIT_MS)
            assert page.text_content("#link") == ""
            portal.call(services["b"].chart.send, "message_accepted")  # live again, not just polled
            page.wait_for_selector("#chart .edge.taken[data-to='processing']", timeout=WAIT_MS)
            assert errors == []
        finally:
            stop(served)


def test_a_new_token_sends_an_open_page_to_the_login_form(browser):
    service = StandInService(make_settings(HTTP_HOST="0.0.0.0", STUDIO_TOKEN="the-first-studio-token"))
    with start_blocking_portal() as portal:
        served, port = portal.start_task(serve, portal.call(service.app, RecordingPublisher()), "127.0.0.1", 0)
        try:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.fill("#token", "the-first-studio-token")
            page.click("button[type=submit]")
            page.wait_for_selector("#air[data-air='on_air']", timeout=WAIT_MS)

            stop(served)  # restarted with a new STUDIO_TOKEN: the cookie no longer opens anything
            service.settings = make_settings(HTTP_HOST="0.0.0.0", STUDIO_TOKEN="the-second-studio-token")
            served = serve_again(portal, portal.call(service.app, RecordingPublisher()), port)
            page.wait_for_url(f"http://127.0.0.1:{port}/login", timeout=WAIT_MS)  # not a page frozen in place
        finally:
            stop(served)
