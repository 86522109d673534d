"""The studio page in a real browser against the real service, RabbitMQ and nginx.

Headless Debian Chromium (apt package `chromium`) driven by Playwright from PyPI; Playwright's
own browser download is not used (it cannot be fetched here), so the test skips only when
/usr/bin/chromium is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import amqp
from support.processes import ROOT

from poc.config import stream_key
from poc.messages import InvalidMessage, MessageLimits, parse_message

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run", "--autoplay-policy=no-user-gesture-required"]  # fmt: skip
SCREENSHOT = ROOT / "test-artifacts" / "studio.png"
LIMIT = 200


def queue_reason(text: str) -> str:
    """The reason the consumer would dead-letter a text message with this data."""
    body = json.dumps({"type": "text", "data": text}).encode()
    with pytest.raises(InvalidMessage) as caught:
        parse_message(body, MessageLimits(max_text_chars=LIMIT))
    return str(caught.value)


@pytest.fixture
def browser():
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright  # a test dependency: missing is an error

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def studio(start_service, service_env, rtmp_server):
    key = stream_key(service_env["RTMP_URL"])
    service = start_service(
        STUDIO_HLS_URL=f"http://127.0.0.1:{rtmp_server.hls_port}/hls/{key}.m3u8",
        MAX_TEXT_CHARS=str(LIMIT),
        TTS_PROVIDER="espeak",  # the quickest voice: this test is about the page
    )
    service.wait_for_log(r"on air: streaming", timeout=60)
    service.wait_for_log(r"connected to RabbitMQ", timeout=30)
    yield service
    queue = service_env["RABBITMQ_QUEUE"]
    service.stop()
    amqp.delete(queue, queue + ".control", queue + ".dlq")


VIDEO_STATE = """() => { const v = document.querySelector('video');
  return {currentTime: v.currentTime, readyState: v.readyState, paused: v.paused,
          error: v.error && v.error.message, note: document.querySelector('#video-note').textContent}; }"""


def test_studio_plays_the_stream_speaks_a_line_and_shows_errors(studio, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.goto(studio.http + "/")

    def wait_for(expression: str, timeout_s: float, arg: object = None) -> None:
        try:
            page.wait_for_function(expression, arg=arg, timeout=timeout_s * 1000)
        except Exception as error:  # say what the page was doing, not just "timeout"
            raise AssertionError(
                f"{expression!r} not true in {timeout_s} s; video: {page.evaluate(VIDEO_STATE)}; "
                f"console: {console[-10:]}; service log:\n{studio.log_text()[-2000:]}"
            ) from error

    # The statechart is drawn from the service's Mermaid text, with the current state lit.
    page.wait_for_selector("#chart .node.current[data-state='idle']", timeout=10_000)
    assert page.locator("#chart .node").count() == 4
    assert page.locator("#state").get_attribute("data-state") == "idle"

    # The video plays the stream from nginx's HLS through the vendored hls.js.
    wait_for("document.querySelector('video').currentTime > 1", 45)
    playing_at = page.evaluate("document.querySelector('video').currentTime")
    wait_for(f"document.querySelector('video').currentTime > {playing_at} + 1", 10)
    assert page.locator("#air").get_attribute("data-air") == "on_air"

    # Bad input: the page shows the very reason the queue would have given.
    page.fill("#text", "")
    page.click("#say")
    wait_for("document.querySelector('#error').textContent.length > 0", 5)
    assert page.text_content("#error") == queue_reason("")
    too_long = "a" * (LIMIT + 1)
    page.fill("#text", too_long)
    page.click("#say")
    wait_for("(want) => document.querySelector('#error').textContent === want", 5, arg=queue_reason(too_long))

    # A good line: the state shown goes to talking, then back to idle.
    page.fill("#text", "Hello from the studio page. This line is long enough to watch it being spoken.")
    page.click("#say")
    page.wait_for_selector("#chart .node.current[data-state='talking']", timeout=60_000)
    assert page.locator("#state").get_attribute("data-state") == "talking"
    assert page.text_content("#error") == ""
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    page.wait_for_selector("#chart .node.current[data-state='idle']", timeout=60_000)
    assert page.locator("#state").get_attribute("data-state") == "idle"
    wait_for("document.querySelector('#n-messages').textContent.includes('played 1')", 5)
    assert page_errors == []
