"""A tiny HTTP/1.1 server on anyio for health, metrics and the studio page.

Backend-neutral (anyio streams), bound to 127.0.0.1 by default: it is an operator's port, not
a public one. Each route returns (status, content type, body bytes); anything else is a 404.
Requests are read with a size cap and a timeout so a slow or hostile client cannot hold it.
"""

from __future__ import annotations

import json
import logging
from typing import Awaitable, Callable

import anyio
from anyio.abc import SocketStream, TaskStatus

log = logging.getLogger(__name__)

Response = tuple[int, str, bytes]
Handler = Callable[["Request"], Awaitable[Response]]
# A long-lived response (server-sent events): the handler writes head and body itself.
StreamHandler = Callable[["Request", SocketStream], Awaitable[None]]

_REASONS = {200: "OK", 202: "Accepted", 204: "No Content", 400: "Bad Request", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip
MAX_REQUEST_BYTES = 64 * 1024


class Request:
    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body

    def json(self) -> object:
        return json.loads(self.body.decode("utf-8"))


def json_response(status: int, payload: object) -> Response:
    return status, "application/json", json.dumps(payload).encode()


class HttpServer:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.routes: dict[tuple[str, str], Handler] = {}
        self.stream_routes: dict[tuple[str, str], StreamHandler] = {}

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def route_stream(self, method: str, path: str, handler: StreamHandler) -> None:
        """A route whose handler writes its own response and may keep the connection open
        (no 10 s limit once the request is read)."""
        self.stream_routes[(method, path)] = handler

    async def serve(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        log.info("HTTP: health, metrics and studio on http://%s:%d/", self.host, self.port)
        task_status.started(self.port)
        await listener.serve(self._handle)

    async def _handle(self, stream: SocketStream) -> None:
        async with stream:
            try:
                with anyio.fail_after(10):
                    request = await _read_request(stream)
                key = (request.method, request.path)
                if key in self.stream_routes:
                    await self.stream_routes[key](request, stream)
                    return
                with anyio.fail_after(10):
                    await _write_response(stream, *await self._respond(request))
            except CLIENT_GONE:
                pass
            except _BadRequest as error:
                await _write_response(stream, *json_response(error.status, {"error": str(error)}))
            except Exception:  # a fault in one route must never end the server (nor the stream)
                log.exception("HTTP: request failed")

    async def _respond(self, request: "Request") -> Response:
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            known = {p for _, p in self.routes} | {p for _, p in self.stream_routes}
            status = 405 if request.path in known else 404
            return json_response(status, {"error": _REASONS[status]})
        try:
            return await handler(request)
        except Exception as error:
            log.exception("HTTP: %s %s failed", request.method, request.path)
            return json_response(500, {"error": f"internal error: {type(error).__name__}"})


# What a client that went away (or stalled) looks like; nothing to report.
CLIENT_GONE = (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
         ConnectionError)  # fmt: skip


class _BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


async def _read_request(stream: SocketStream) -> Request:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive(4096)
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            raise _BadRequest("request too large", 413)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _version = lines[0].split(" ", 2)
    except ValueError:
        raise _BadRequest("malformed request line") from None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    if length > MAX_REQUEST_BYTES:
        raise _BadRequest("request body too large", 413)
    while len(body) < length:
        body += await stream.receive(4096)
    path = target.split("?", 1)[0]
    return Request(method.upper(), path, headers, body[:length])


async def _write_response(stream: SocketStream, status: int, content_type: str, body: bytes) -> None:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
    )
    await stream.send(head.encode("latin-1") + body)
