"""The operator's port as a server: its limits hold against slow and oversized clients, errors
come back as one-line JSON, and it stops at once when the service's task group ends, on
asyncio and trio. The real app (Starlette on hypercorn) on a real socket."""

from __future__ import annotations

import json

import anyio
import pytest
from support.operator import EventReader, StandInService, call, make_settings, read_to_end, serving

import poc.ops.http as http

pytestmark = pytest.mark.anyio


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> float:
    """The 10 s limits scaled down so the tests wait half a second, not ten."""
    monkeypatch.setattr(http, "HEAD_TIMEOUT_S", 0.5)
    monkeypatch.setattr(http, "BODY_TIMEOUT_S", 0.5)
    return 0.5


def app():
    return StandInService(make_settings()).app()


async def raw(port: int, data: bytes) -> bytes:
    """Send `data` and read until the server closes (within 5 s)."""
    with anyio.fail_after(5):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(data)
            return await read_to_end(stream)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def error_of(response: bytes) -> str:
    error = json.loads(response.partition(b"\r\n\r\n")[2])["error"]
    assert "\n" not in error
    return error


async def test_a_body_over_the_limit_is_a_413_before_or_while_it_arrives():
    async with serving(app()) as port:
        declared = await raw(
            port,
            b"POST /api/say HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {http.MAX_BODY_BYTES + 1}\r\n\r\n".encode(),  # and no body at all
        )
        chunk = b"1000\r\n" + b"a" * 0x1000 + b"\r\n"
        chunked = await raw(
            port,
            b"POST /api/say HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunk * (http.MAX_BODY_BYTES // 0x1000 + 1),
        )
    for response in (declared, chunked):
        assert status_of(response) == 413 and error_of(response) == "request body too large"


async def test_a_head_over_the_limit_is_refused():
    async with serving(app()) as port:
        padding = b"X-Padding: " + b"a" * http.MAX_HEAD_BYTES + b"\r\n"
        at_once = await raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n" + padding + b"\r\n")
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
            # Most likely read apart from the first piece, so h11 sees the head grow too large;
            # read together, the guard refuses it: the same answer either way.
            await anyio.sleep(0.1)
            await stream.send(padding)
            with anyio.fail_after(5):
                in_pieces = await read_to_end(stream)  # answered and closed
    for response in (at_once, in_pieces):
        assert status_of(response) == 431
    assert error_of(at_once) == "request head too large"


async def test_a_client_that_stalls_is_dropped_and_others_are_served_meanwhile(short_timeouts: float):
    async with serving(app()) as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as head_staller, \
                await anyio.connect_tcp("127.0.0.1", port) as body_staller:  # fmt: skip
            await head_staller.send(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
            await body_staller.send(
                b"POST /api/say HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 100\r\n\r\n{"te'  # 4 of 100 bytes, then nothing
            )
            status, _, _ = await call(port, "GET", "/healthz")
            assert status == 200  # the stalled ones hold nothing
            started = anyio.current_time()
            with anyio.fail_after(short_timeouts + 2):
                assert await read_to_end(head_staller) == b""  # closed without an answer
                body_answer = await read_to_end(body_staller)
            assert anyio.current_time() - started < short_timeouts + 1
    assert status_of(body_answer) == 408 and "not received within 0.5 s" in error_of(body_answer)


async def test_unknown_paths_and_methods_are_json_404_and_405_and_nothing_is_cached():
    async with serving(app()) as port:
        missing = await call(port, "GET", "/nothing")
        wrong = await call(port, "DELETE", "/api/status")
        page = await call(port, "GET", "/")
    assert missing[0] == 404 and json.loads(missing[2]) == {"error": "Not Found"}
    assert wrong[0] == 405 and json.loads(wrong[2]) == {"error": "Method Not Allowed"}
    assert set(wrong[1]["allow"].split(", ")) == {"GET", "HEAD"}
    for _, headers, _ in (missing, wrong, page):
        assert headers["cache-control"] == "no-store"


async def test_connections_are_kept_alive_for_browsers():
    """Without `Connection: close` one connection carries several requests (hypercorn's
    HTTP/1.1), which the old server never did."""
    async with serving(app()) as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            reader = EventReader(stream)
            for _ in range(3):
                await stream.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                with anyio.fail_after(5):
                    head = await reader.head()
                    length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
                                 .split(b":")[1])  # fmt: skip
                    while len(reader.buffer) < length:
                        reader.buffer += await stream.receive()
                assert head.startswith(b"HTTP/1.1 200")
                reader.buffer = reader.buffer[length:]


async def test_the_server_stops_at_once_when_its_task_group_is_cancelled_even_with_streams_open():
    service = StandInService(make_settings())
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            port = await tg.start(http.serve, service.app(), "127.0.0.1", 0)
            events = await anyio.connect_tcp("127.0.0.1", port)
            await events.send(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
            await EventReader(events).events(2)
            idle = await anyio.connect_tcp("127.0.0.1", port)  # connected, has sent nothing
            cancelled_at = anyio.current_time()
            tg.cancel_scope.cancel()
        took = anyio.current_time() - cancelled_at
        # Both clients are let go and nobody can connect any more.
        await read_to_end(events)
        await read_to_end(idle)
        await events.aclose()
        await idle.aclose()
        with pytest.raises(OSError):
            await anyio.connect_tcp("127.0.0.1", port)
    assert took < http.SHUTDOWN_GRACE_S  # the open stream was ended, not waited out


async def test_the_port_reported_is_the_one_bound_and_ipv6_loopback_works():
    async with anyio.create_task_group() as tg:
        port = await tg.start(http.serve, app(), "::1", 0)
        async with await anyio.connect_tcp("::1", port) as stream:
            await stream.send(b"GET /healthz HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n")
            with anyio.fail_after(5):
                response = await read_to_end(stream)
        tg.cancel_scope.cancel()
    assert status_of(response) == 200
