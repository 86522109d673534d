"""STUDIO_TOKEN: off loopback the studio needs it (bearer header or login cookie), health and
metrics stay open, and without one poc refuses to start. The real app on a real socket, driven
by httpx as a script or a browser would."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from support.operator import EventReader, RecordingPublisher, StandInService, make_settings, serving

from poc.config import ConfigError, load_settings
from poc.ops.auth import COOKIE

pytestmark = pytest.mark.anyio

TOKEN = "correct-horse-battery-staple"


def guarded(publisher=None):
    service = StandInService(make_settings(HTTP_HOST="0.0.0.0", STUDIO_TOKEN=TOKEN))
    return serving(service.app(publisher or RecordingPublisher()))


def client(port: int, **kwargs) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5, **kwargs)


def assert_no_token(response: httpx.Response) -> None:
    shown = response.text + "".join(f"{k}: {v}" for k, v in response.headers.items())
    assert TOKEN not in shown


STUDIO = [("GET", "/", None), ("GET", "/static/studio.js", None), ("GET", "/api/status", None),
          ("POST", "/api/say", {"text": "Hello."}), ("POST", "/api/control", {"action": "interrupt"}),
          ("POST", "/api/control", {"action": "clear"}), ("POST", "/api/control", {"action": "stop"}),
          ("POST", "/api/control", {"action": "start"})]  # fmt: skip


@pytest.mark.parametrize("credential", [None, "Bearer wrong-token-of-enough-length", f"Basic {TOKEN}", "Bearer"])
async def test_without_the_token_the_studio_answers_401_and_sends_nothing(credential):
    publisher = RecordingPublisher()
    headers = {"Authorization": credential} if credential else {}
    async with guarded(publisher) as port, client(port, headers=headers) as http:
        for method, path, body in STUDIO:
            response = await http.request(method, path, json=body)
            if (method, path) == ("GET", "/"):  # a browser is sent to the login form
                assert response.status_code == 303 and response.headers["location"] == "/login"
                continue
            assert response.status_code == 401, path
            error = response.json()["error"]
            assert "STUDIO_TOKEN" in error and "\n" not in error
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert_no_token(response)
        events = await http.get("/api/events")
        assert events.status_code == 401
    assert publisher.sent == []


async def test_with_the_bearer_token_every_studio_route_works():
    publisher = RecordingPublisher()
    async with guarded(publisher) as port, client(port, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        for method, path, body in STUDIO:
            response = await http.request(method, path, json=body)
            assert response.status_code == (202 if method == "POST" else 200), path
            assert_no_token(response)
    assert [b.get("action", b.get("data")) for b in publisher.sent] == ["Hello.", "interrupt", "clear", "stop", "start"]


async def test_health_and_metrics_stay_open():
    async with guarded() as port, client(port) as http:
        health = await http.get("/healthz")
        metrics = await http.get("/metrics")
    assert health.status_code == 200 and health.json()["healthy"] is True
    assert metrics.status_code == 200 and "poc_frames_total" in metrics.text


async def test_logging_in_sets_an_httponly_cookie_that_opens_the_page_its_calls_and_its_events():
    async with guarded() as port, client(port) as http:
        form = await http.get("/login")
        assert form.status_code == 200 and 'name="token"' in form.text and 'type="password"' in form.text

        wrong = await http.post("/login", data={"token": "not-the-token-at-all"})
        assert wrong.status_code == 401 and "not the studio token" in wrong.text
        assert COOKIE not in wrong.headers.get("set-cookie", "") and COOKIE not in http.cookies

        right = await http.post("/login", data={"token": TOKEN})
        assert right.status_code == 303 and right.headers["location"] == "/"
        cookie = right.headers["set-cookie"]
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        assert TOKEN not in cookie  # the cookie is derived from the token, not the token

        page = await http.get("/")  # httpx sends the cookie back, as a browser would
        assert page.status_code == 200 and "<video" in page.text
        said = await http.post("/api/say", json={"text": "Logged in."})
        assert said.status_code == 202
        async with http.stream("GET", "/api/events") as events:
            assert events.status_code == 200
            assert events.headers["content-type"].startswith("text/event-stream")
            async for chunk in events.aiter_text():
                assert "event: state" in chunk
                break


async def test_a_cookie_made_for_another_token_is_refused():
    other = StandInService(make_settings(HTTP_HOST="0.0.0.0", STUDIO_TOKEN="another-token-16-chars"))
    async with serving(other.app(RecordingPublisher())) as other_port, client(other_port) as http:
        await http.post("/login", data={"token": "another-token-16-chars"})
        stale = http.cookies[COOKIE]
    async with guarded() as port, client(port, cookies={COOKIE: stale}) as http:
        response = await http.get("/api/status")
    assert response.status_code == 401


async def test_the_event_stream_needs_the_token_too():
    import anyio

    async with guarded() as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(f"GET /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
            with anyio.fail_after(5):
                reader = EventReader(stream)
                assert (await reader.head()).startswith(b"HTTP/1.1 200")
                [(kind, payload)] = await reader.events(1)
    assert (kind, payload["state"]) == ("state", "idle")


async def test_the_token_never_reaches_the_log(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    async with guarded() as port, client(port) as http:
        await http.post("/login", data={"token": TOKEN})
        await http.post("/api/say", json={"text": "Hello."}, headers={"Authorization": f"Bearer {TOKEN}"})
        await http.post("/login", data={"token": TOKEN[:-1]})
    assert caplog.records  # something was logged (the port, the message sent)
    assert TOKEN not in caplog.text and TOKEN[:-1] not in caplog.text


# -- the setting ---------------------------------------------------------------------------


def settings(**env: str):
    return load_settings(environ={}, env_file=Path("/nonexistent"), overrides=env, check_files=False)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # plain functions: one backend is enough
@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "localhost", "::1", "[::1]"])
async def test_loopback_needs_no_token(host):
    assert settings(HTTP_HOST=host).studio_token is None


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "studio.example.com"])
async def test_off_loopback_a_token_is_required_unless_the_port_is_off(host):
    with pytest.raises(ConfigError) as caught:
        settings(HTTP_HOST=host)
    message = str(caught.value)
    assert message.startswith("STUDIO_TOKEN: required when HTTP_HOST") and host in message and "\n" not in message
    assert settings(HTTP_HOST=host, HTTP_PORT="0").http_port == 0  # no port, nothing to guard
    assert settings(HTTP_HOST=host, STUDIO_TOKEN=TOKEN).studio_token.get_secret_value() == TOKEN


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_short_token_is_refused_without_being_echoed():
    with pytest.raises(ConfigError) as caught:
        settings(HTTP_HOST="0.0.0.0", STUDIO_TOKEN="hunter2hunter2")
    assert str(caught.value).startswith("STUDIO_TOKEN: must be at least 16 characters")
    assert "hunter2" not in str(caught.value)
    assert TOKEN in settings(STUDIO_TOKEN=TOKEN).secrets()  # masked wherever logs mask secrets
    assert TOKEN not in repr(settings(STUDIO_TOKEN=TOKEN))


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_poc_refuses_to_bind_off_loopback_without_a_token_in_one_line_with_exit_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HTTP_", "STUDIO_", "RTMP_", "TTS_"))}
    env.update(HTTP_HOST="0.0.0.0", POC_ENV_FILE=str(tmp_path / "none.env"))
    result = subprocess.run([sys.executable, "-m", "poc", "run"], env=env, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "STUDIO_TOKEN" in lines[0] and "HTTP_HOST" in lines[0], result.stderr
