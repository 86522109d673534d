"""The operator's pages and the browser's 6 connections per host and port, in a real browser
(Debian's Chromium through Playwright): a hidden studio tab lets go of its event stream and is
fresh at once when shown again; the station list polls one request at a time, each with a
timeout, against a server that accepts and never answers; a forced re-login returns to the page
that was open. The real app and server in process over stand-in services, watched from the
server's side by a thin ASGI wrapper; skipped without /usr/bin/chromium, like
tests/ops/test_studio_browser.py."""

from __future__ import annotations

import time
from typing import Callable

import anyio
import pytest
from anyio.from_thread import start_blocking_portal
from starlette.types import ASGIApp, Receive, Scope, Send
from support.operator import RecordingPublisher, StandInService, make_settings

from poc.ops.http import json_error, serve
from poc.ops.stations_http import StationView, stations_app

pytestmark = pytest.mark.integration

WAIT_MS = 10_000
TOKEN = "tabs-token-for-the-browser"

# The list's requests the page has made and not yet seen end, and the most at once. Counted in
# the page: Chromium holds a second request for a URL until the first one's answer (its cache
# lock, some 20 s) before it takes another connection for it, so the server sees the pile-up late.
COUNT_LIST_FETCHES = """(() => {
  const fetch = window.fetch;
  window.listFetches = { open: 0, peak: 0 };
  window.fetch = (url, ...rest) => {
    if (!String(url).endsWith("api/stations")) return fetch(url, ...rest);
    const count = window.listFetches;
    count.peak = Math.max(count.peak, ++count.open);
    return fetch(url, ...rest).finally(() => { count.open--; });
  };
})();"""

# Headless Chromium reports every page visible: the page is told it is hidden (or shown) the
# way a browser tells it, through document.visibilityState / document.hidden and the event.
SET_VISIBILITY = """(state) => {
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => state });
  Object.defineProperty(document, "hidden", { configurable: true, get: () => state === "hidden" });
  document.dispatchEvent(new Event("visibilitychange"));
}"""


class Watch:
    """ASGI wrapper around the operator's app: counts the requests in progress whose path ends
    with `suffix` (and the most at once); while `stalled`, such a request is accepted and never
    answered until its client goes away, as a hung server does."""

    def __init__(self, app: ASGIApp, suffix: str) -> None:
        self.app = app
        self.state = app.state  # serve() ends the app's open responses through it
        self.suffix = suffix
        self.open = 0
        self.peak = 0
        self.stalled = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith(self.suffix):
            await self.app(scope, receive, send)
            return
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            if self.stalled:
                await self._hang(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        finally:
            self.open -= 1

    async def _hang(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = False

        async def until_disconnect() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True

        async with anyio.create_task_group() as tg:
            tg.start_soon(until_disconnect)
            while self.stalled and not gone:
                await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        if not gone:  # released while the client still waits: it gets an answer, not a hang
            await json_error(503, "stalled by the test")(scope, receive, send)


def wait_until(condition: Callable[[], bool], what: str, seconds: float = WAIT_MS / 1000) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {seconds:g} s: {what}")
        time.sleep(0.05)


def stations(names: tuple[str, ...]) -> tuple[dict[str, StandInService], dict[str, StationView]]:
    services = {name: StandInService(make_settings(RTMP_URL=f"rtmp://127.0.0.1:1935/live/{name}key")) for name in names}
    views = {name: StationView(name=name, settings=s.settings, status=s.status, metrics=s.metrics, chart=s.chart)
             for name, s in services.items()}  # fmt: skip
    return services, views


async def publish(body: dict, control: bool) -> str:
    return str(body["id"])


def test_a_hidden_studio_tab_closes_its_event_stream_and_is_fresh_at_once_when_shown(browser):
    service = StandInService(make_settings())
    with start_blocking_portal() as portal:
        watch = Watch(portal.call(service.app, RecordingPublisher()), "/api/events")
        served, port = portal.start_task(serve, watch, "127.0.0.1", 0)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#air[data-air='on_air']", timeout=WAIT_MS)
            wait_until(lambda: watch.open == 1, "the page's event stream is open")

            page.evaluate(SET_VISIBILITY, "hidden")
            wait_until(lambda: watch.open == 0, "the hidden page's event stream is closed")
            assert page.get_attribute("#air", "data-air") == "paused"  # its numbers are from before
            assert "hidden" in page.text_content("#link")

            service.underrun_frames = 42  # meanwhile the service moves on
            service.stopped = True
            page.evaluate(SET_VISIBILITY, "visible")
            page.wait_for_selector("#air[data-air='stopped']", timeout=WAIT_MS)
            assert page.text_content("#n-underruns") == "42" and page.text_content("#link") == ""
            wait_until(lambda: watch.open == 1, "the shown page's event stream is open again")
            # Live again, not just refreshed once: a transition arrives through the stream.
            portal.call(service.chart.send, "message_accepted")
            page.wait_for_selector("#chart .node.current[data-state='processing']", timeout=WAIT_MS)
            assert watch.peak == 1 and errors == []
        finally:
            served.cancel()


def test_with_six_station_tabs_hidden_a_seventh_page_loads_and_sends(browser):
    services, views = stations(("a", "b", "c", "d", "e", "f", "g"))
    with start_blocking_portal() as portal:
        app = portal.call(lambda: stations_app(make_settings(), lambda: views, publisher_for=lambda view: publish))
        watch = Watch(app, "/api/events")
        served, port = portal.start_task(serve, watch, "127.0.0.1", 0)
        try:
            context = browser.new_context()  # one profile: its tabs share the 6 connections
            for name in "abcdef":
                tab = context.new_page()
                tab.goto(f"http://127.0.0.1:{port}/stations/{name}/")
                tab.wait_for_selector("#air[data-air='on_air']", timeout=WAIT_MS)
                tab.evaluate(SET_VISIBILITY, "hidden")  # the operator switches to another tab
            wait_until(lambda: watch.open == 0, "the hidden tabs' event streams are closed")

            page = context.new_page()
            page.goto(f"http://127.0.0.1:{port}/stations/g/", timeout=WAIT_MS)
            page.wait_for_selector("#air[data-air='on_air']", timeout=WAIT_MS)
            page.fill("#text", "From the seventh tab.")
            page.click("#say")
            page.wait_for_function("document.querySelector('#notice').textContent.startsWith('queued text')",
                                   timeout=WAIT_MS)  # fmt: skip
            context.close()
        finally:
            served.cancel()


def test_the_station_list_polls_one_request_at_a_time_and_says_when_the_server_hangs(browser):
    services, views = stations(("a", "b"))
    with start_blocking_portal() as portal:
        app = portal.call(lambda: stations_app(make_settings(), lambda: views, publisher_for=lambda view: publish))
        watch = Watch(app, "/api/stations")
        served, port = portal.start_task(serve, watch, "127.0.0.1", 0)
        try:
            page = browser.new_page()
            page.add_init_script(COUNT_LIST_FETCHES)
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("tr[data-station='b'] .stream[data-stream='on air']", timeout=WAIT_MS)

            watch.peak = 0
            watch.stalled = True  # the server accepts each request and never answers it
            # The request times out and the page says so (with the reason), rather than showing
            # the last list as if it were current while requests pile up behind it.
            page.wait_for_function("document.querySelector('#error').textContent.includes('did not answer')",
                                   timeout=WAIT_MS)  # fmt: skip
            assert page.evaluate("window.listFetches.peak") == 1  # one at a time, not one more a second
            assert watch.peak == 1
            assert page.get_attribute("#air", "data-air") == "lost"
            assert page.text_content("#air") == "no connection"

            services["a"].on_air = False
            watch.stalled = False
            page.wait_for_selector("tr[data-station='a'] .stream[data-stream='off air']", timeout=WAIT_MS)
            page.wait_for_selector("#air[data-air='live']", timeout=WAIT_MS)
            assert page.text_content("#error") == ""
        finally:
            served.cancel()


def test_a_forced_login_returns_to_the_station_page_that_was_open(browser):
    services, views = stations(("a", "b"))
    settings = make_settings(HTTP_HOST="0.0.0.0", STUDIO_TOKEN=TOKEN)
    with start_blocking_portal() as portal:
        app = portal.call(lambda: stations_app(settings, lambda: views, publisher_for=lambda view: publish))
        served, port = portal.start_task(serve, app, "127.0.0.1", 0)
        try:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/login")
            page.fill("#token", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_selector("tr[data-station='b']", timeout=WAIT_MS)
            page.goto(f"http://127.0.0.1:{port}/stations/b/")
            page.wait_for_selector("#air[data-air='on_air']", timeout=WAIT_MS)

            page.context.clear_cookies()  # the login expired (or the token changed) under the open page
            page.fill("#text", "Hello again.")
            page.click("#say")
            page.wait_for_url(f"http://127.0.0.1:{port}/login?next=%2Fstations%2Fb%2F", timeout=WAIT_MS)
            page.fill("#token", "not-the-token-of-any-length")
            page.click("button[type=submit]")  # a wrong token keeps the way back
            page.wait_for_selector("text=That is not the studio token.", timeout=WAIT_MS)
            page.fill("#token", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_url(f"http://127.0.0.1:{port}/stations/b/", timeout=WAIT_MS)
            page.wait_for_selector("#air[data-air='on_air']", timeout=WAIT_MS)
        finally:
            served.cancel()
