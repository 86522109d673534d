"""With STUDIO_TOKEN set, a real browser (Debian's Chromium through Playwright) logs in once and
then uses the page as on loopback: the page, its calls and its event stream carry the cookie.
The real app and server in process (a stand-in service behind them); skipped without
/usr/bin/chromium, like tests/e2e/test_studio.py."""

from __future__ import annotations

import pytest
from anyio.from_thread import start_blocking_portal
from support.operator import RecordingPublisher, StandInService, make_settings

from poc.ops.auth import COOKIE
from poc.ops.http import serve

pytestmark = pytest.mark.integration

TOKEN = "studio-token-for-the-browser"


def test_a_browser_logs_in_with_the_token_and_then_uses_the_studio(browser):
    publisher = RecordingPublisher()
    service = StandInService(make_settings(HTTP_HOST="0.0.0.0", STUDIO_TOKEN=TOKEN))
    with start_blocking_portal() as portal:
        app = portal.call(service.app, publisher)  # built on the loop, as the service does
        served, port = portal.start_task(serve, app, "127.0.0.1", 0)
        try:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            assert page.url.endswith("/login")  # sent to the form, not shown a 401
            page.fill("#token", "a-wrong-token-of-some-length")
            page.click("button[type=submit]")
            page.wait_for_selector("text=That is not the studio token.", timeout=5_000)

            page.fill("#token", TOKEN)
            page.click("button[type=submit]")
            # The page loads, its status call and event stream work: the chart is drawn and lit.
            page.wait_for_selector("#chart .node.current[data-state='idle']", timeout=10_000)
            [cookie] = [c for c in page.context.cookies() if c["name"] == COOKIE]
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]

            page.fill("#text", "Hello from behind the token.")
            page.click("#say")
            page.wait_for_function("document.querySelector('#notice').textContent.startsWith('queued text')",
                                   timeout=5_000)  # fmt: skip
            assert [body["data"] for body in publisher.sent] == ["Hello from behind the token."]
            # A live transition reaches the page through the cookie-carrying event stream.
            portal.call(service.chart.send, "message_accepted")
            page.wait_for_selector("#chart .node.current[data-state='processing']", timeout=5_000)
        finally:
            served.cancel()
