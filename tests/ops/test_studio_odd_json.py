"""Odd JSON sent to the studio's say and control routes: each is a 400 with a one-line reason
(the one the queue would give where there is one), nothing is published, and the server keeps
serving. The real operator app (Starlette on hypercorn) on a real socket, on asyncio and trio."""

from __future__ import annotations

import json

import pytest
from support.operator import RecordingPublisher, StandInService, call, make_settings, serving

from poc.messages import InvalidMessage, MessageLimits, parse_message

pytestmark = pytest.mark.anyio


def queue_reason(body: dict) -> str:
    """What the consumer would dead-letter this queue body with (sent as JSON libraries do)."""
    with pytest.raises(InvalidMessage) as caught:
        parse_message(json.dumps(body).encode("ascii"), MessageLimits())
    return str(caught.value)


@pytest.mark.parametrize(
    ("path", "raw", "queue_body"),
    [
        # A "\ud83d" escape is valid JSON but names half of a UTF-16 pair: text cut in the middle
        # of an emoji by a producer that counts UTF-16 units.
        ("/api/say", b'{"text": "Hello \\ud83d"}', {"type": "text", "data": "Hello \ud83d"}),
        ("/api/control", b'{"action": "\\udc00stop"}', {"type": "control", "action": "\udc00stop"}),
    ],
)
async def test_a_lone_surrogate_is_a_400_with_the_queues_reason(path: str, raw: bytes, queue_body: dict) -> None:
    publisher = RecordingPublisher()
    async with serving(StandInService(make_settings()).app(publisher)) as port:
        status, _, body = await call(port, "POST", path, raw, {"Content-Type": "application/json"})
        still, _, _ = await call(port, "GET", "/healthz")
    error = json.loads(body)["error"]
    assert (status, "\n" in error) == (400, False), error
    assert error == queue_reason(queue_body)
    assert publisher.sent == [] and still == 200


async def test_json_nested_past_the_parsers_limit_is_a_400_not_an_internal_error() -> None:
    publisher = RecordingPublisher()
    depth = 20_000  # 40 KB: under the 64 KiB body limit, far past Python's recursion limit
    raw = b'{"text": ' + b"[" * depth + b"]" * depth + b"}"
    async with serving(StandInService(make_settings()).app(publisher)) as port:
        status, _, body = await call(port, "POST", "/api/say", raw, {"Content-Type": "application/json"})
    error = json.loads(body)["error"]
    assert status == 400 and "nested too deeply" in error and "\n" not in error
    assert publisher.sent == []


@pytest.mark.parametrize("origin", ["http://[::1", "http://[zz]:80"])
async def test_an_origin_that_is_no_url_is_refused_as_cross_origin(origin: str) -> None:
    publisher = RecordingPublisher()
    async with serving(StandInService(make_settings()).app(publisher)) as port:
        status, _, body = await call(port, "POST", "/api/say", {"text": "Hello."}, {"Origin": origin})
    assert (status, json.loads(body)) == (403, {"error": "cross-origin requests are refused"})
    assert publisher.sent == []
