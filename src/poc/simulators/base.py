"""A threaded HTTP/1.1 server on 127.0.0.1 that a vendor simulator subclasses.

A simulator declares routes as methods taking (request, match) and scripts faults in a queue:
each request pops the next planned fault, if any, before it is served, so a test says
"the first call is a 429, the second succeeds" by queueing one fault. Every request is recorded
(method, path, headers, body) so a test can assert what the SDK really sent.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs


@attrs.frozen
class Recorded:
    method: str
    path: str  # with the query string
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Route = Callable[["Request", "re.Match[str]"], None]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client that drops its connection (a timeout, a cancelled stream) is normal here;
        anything else is still printed."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


class Request:
    """What a route sees: the recorded request and ways to answer it."""

    def __init__(self, handler: BaseHTTPRequestHandler, recorded: Recorded, server: "VendorServer") -> None:
        self._handler = handler
        self.recorded = recorded
        self.server = server

    @property
    def headers(self) -> dict[str, str]:
        return self.recorded.headers

    def json(self) -> Any:
        return self.recorded.json()

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.send_bytes(status, json.dumps(payload).encode(), "application/json", headers)

    def send_bytes(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        h = self._handler
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(body)
        h.wfile.flush()

    def send_chunked(
        self,
        status: int,
        parts: Iterable[bytes],
        content_type: str,
        *,
        first_byte_delay: float = 0.0,
        stall_after: int | None = None,
        stall_seconds: float = 30.0,
        idle_part: bytes = b"",
        idle_interval: float = 0.1,
    ) -> None:
        """Stream `parts` with chunked transfer encoding, flushing each one. With `stall_after`,
        the stream stops after that many parts and the connection stays open `stall_seconds`,
        silent, or sending `idle_part` every `idle_interval` (a keep-alive that is not audio)."""
        h = self._handler
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        h.wfile.flush()
        if first_byte_delay:
            time.sleep(first_byte_delay)
        try:
            for index, part in enumerate(parts):
                if stall_after is not None and index >= stall_after:
                    self._idle(idle_part, idle_interval, stall_seconds)
                    return
                if not part:
                    continue
                if index == 0:
                    self.server.first_byte_at.append(time.monotonic())
                h.wfile.write(f"{len(part):X}\r\n".encode() + part + b"\r\n")
                h.wfile.flush()
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout, a cancel): nothing to finish

    def _idle(self, part: bytes, interval: float, seconds: float) -> None:
        """Keep the connection open `seconds` (or until the server stops), sending `part` every
        `interval` if there is one."""
        if not part:
            self.server.stalled.wait(seconds)
            return
        deadline = time.monotonic() + seconds
        while not self.server.stalled.wait(interval) and time.monotonic() < deadline:
            self._handler.wfile.write(f"{len(part):X}\r\n".encode() + part + b"\r\n")
            self._handler.wfile.flush()


class VendorServer:
    """Subclass and fill `routes` with (method, path regex, route) triples."""

    routes: list[tuple[str, str, Route]] = []

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.faults: deque[Any] = deque()  # popped one per request by the routes that honour them
        self.first_byte_at: list[float] = []  # time.monotonic() of each stream's first audio byte
        self.stalled = threading.Event()  # set on stop, so stalled streams end
        self._compiled = [(m, re.compile(p + r"\Z"), r) for m, p, r in self.routes]
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                recorded = Recorded(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                server.requests.append(recorded)
                path = self.path.split("?", 1)[0]
                for method, pattern, route in server._compiled:
                    match = pattern.match(path)
                    if method == self.command and match:
                        route(server, Request(self, recorded, server), match)
                        return
                Request(self, recorded, server).send_json(404, {"error": f"no route {self.command} {path}"})

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        self._http = _QuietServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        # A short poll keeps stop() quick: tests start and stop many of these.
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, name=type(self).__name__, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._http.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def next_fault(self) -> Any:
        return self.faults.popleft() if self.faults else None

    def start(self) -> "VendorServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stalled.set()
        self._http.shutdown()
        self._http.server_close()

    def __enter__(self) -> "VendorServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
