"""/login?next=PATH: after logging in, the browser goes back to the page it was sent away from,
but only to a path on this port: never an open redirect. The real app on a real socket, driven
by httpx as a browser would."""

from __future__ import annotations

import httpx
import pytest
from support.operator import StandInService, make_settings, serving

from poc.ops.auth import safe_next

pytestmark = pytest.mark.anyio

TOKEN = "login-next-token-of-some-length"

SAME_ORIGIN = ["/stations/b/", "/stations/b/?tab=numbers", "/stations/caf%C3%A9/", "/"]
# Each of these leaves the origin in some browser, or is no path at all: all go to "/".
ELSEWHERE = [
    "//evil.example/", "///evil.example/", "https://evil.example/", "http:evil.example", "evil.example",
    "/\\evil.example/", "\\\\evil.example/", "/\t/evil.example/", "/\n/evil.example/", "/\r\nSet-Cookie: x=1",
    " //evil.example/", "javascript:alert(1)", "/stations/b/ ", "/\u3000/evil.example", "", "/stations/\x00/",
]  # fmt: skip


def guarded():
    return serving(StandInService(make_settings(HTTP_HOST="0.0.0.0", STUDIO_TOKEN=TOKEN)).app())


def client(port: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5)


@pytest.mark.parametrize("path", SAME_ORIGIN)
async def test_logging_in_returns_to_a_path_on_this_port(path: str):
    async with guarded() as port, client(port) as http:
        form = await http.get("/login", params={"next": path})
        assert form.status_code == 200
        right = await http.post("/login", data={"token": TOKEN, "next": path})
    assert right.status_code == 303 and right.headers["location"] == path


@pytest.mark.parametrize("elsewhere", ELSEWHERE)
async def test_logging_in_never_sends_the_browser_elsewhere(elsewhere: str):
    assert safe_next(elsewhere) == "/"
    async with guarded() as port, client(port) as http:
        form = await http.get("/login", params={"next": elsewhere})
        right = await http.post("/login", data={"token": TOKEN, "next": elsewhere})
    assert form.status_code == 200 and 'name="next"' not in form.text  # not carried on
    assert right.status_code == 303 and right.headers["location"] == "/"


async def test_the_form_carries_the_path_on_escaped_and_a_wrong_token_keeps_it():
    sly = '/stations/b/"><script>alert(1)</script>'
    async with guarded() as port, client(port) as http:
        form = await http.get("/login", params={"next": sly})
        wrong = await http.post("/login", data={"token": "not-the-token-at-all", "next": "/stations/b/"})
        plain = await http.get("/login")
    assert "<script>" not in form.text and 'value="/stations/b/&quot;&gt;&lt;script&gt;' in form.text
    assert wrong.status_code == 401 and '<input type="hidden" name="next" value="/stations/b/">' in wrong.text
    assert 'name="next"' not in plain.text  # no path: the login goes to "/" as before
