"""The operator's HTTP port: a Starlette app served by hypercorn inside the service's task group.

Health, metrics and the studio are Starlette routes (ops/health.py, ops/studio.py); this module
puts them in one app behind the guards every route shares, and serves it. Bound to 127.0.0.1 by
default: it is an operator's port, not a public one (ops/auth.py guards it when it is not).

Limits, so a slow or hostile client cannot hold the port or the service's memory:
- a request head over MAX_HEAD_BYTES is refused: by h11 while it arrives (hypercorn answers
  and closes), else by the guard with a 431;
- a head not complete within HEAD_TIMEOUT_S closes the connection (hypercorn's idle timer runs
  until the head is in), as does an idle kept-alive connection;
- a body over MAX_BODY_BYTES is a 413 (at once if Content-Length says so, else as it arrives);
  one not in within BODY_TIMEOUT_S is a 408. Handlers get the whole body, already read;
- a fault in a route is a 500 with the exception's type and never ends the server.

hypercorn has one runner per event loop (hypercorn.asyncio, hypercorn.trio), picked here by
the loop that runs; both are stopped through their shutdown trigger, not by cancellation, so
they close their connections in their own order (see serve). Responses still open then (event
streams never end by themselves) are ended first, so that shutting down takes no longer than
closing the sockets.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from contextlib import contextmanager
from typing import Any, Awaitable, Callable, Iterator, Sequence

import anyio
from anyio.abc import TaskStatus
from hypercorn.config import Config, Sockets
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
# hypercorn's own lines ("Running on ... (CTRL + C to quit)") would mislead in a service log;
# poc logs its own line when the port is open. Its warnings and errors still come through.
_server_log = logging.getLogger(__name__ + ".hypercorn")
_server_log.setLevel(logging.WARNING)

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024  # the studio's JSON bodies are a line of text; far under this
HEAD_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 10.0
SHUTDOWN_GRACE_S = 1.0  # hypercorn's wait for connections to finish once responses have ended


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one shape of every error this port answers: {"error": "<one line>"}."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class OpenResponses:
    """The responses in progress on one app, so that a shutdown can end them at once (an event
    stream would otherwise hold the port until hypercorn's grace period cut it)."""

    def __init__(self) -> None:
        self._scopes: set[anyio.CancelScope] = set()
        self._closed = False

    @contextmanager
    def track(self) -> Iterator[None]:
        """The block is cancelled (quietly: the block just ends) when close() is called."""
        with anyio.CancelScope() as scope:
            if self._closed:
                scope.cancel()
            self._scopes.add(scope)
            try:
                yield
            finally:
                self._scopes.discard(scope)

    def close(self) -> None:
        """End every open response and each one that starts from now on."""
        self._closed = True
        for scope in list(self._scopes):
            scope.cancel()


def build_app(routes: Sequence[BaseRoute], middleware: Sequence[Middleware] = ()) -> Starlette:
    """One app for `routes`: the request guard outermost, then `middleware` (e.g. the studio
    token), then JSON 404/405 answers. Every response carries Cache-Control: no-store."""
    open_responses = OpenResponses()
    app = Starlette(
        routes=list(routes),
        middleware=[Middleware(RequestGuard, open_responses=open_responses), *middleware],
        exception_handlers={HTTPException: _http_exception},
    )
    app.state.open_responses = open_responses  # serve() ends them at shutdown
    return app


async def _http_exception(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return json_error(error.status_code, error.detail, dict(error.headers or {}))


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


class RequestGuard:
    """ASGI middleware: refuses an oversized head, reads the body under the size and time
    limits, turns a route's fault into a 500 (logged once, with the traceback), marks every
    response no-store, and lets `open_responses` end the request at shutdown."""

    def __init__(self, app: ASGIApp, open_responses: OpenResponses) -> None:
        self.app = app
        self.open_responses = open_responses

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_no_store(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"cache-control"]
                message = {**message, "headers": [*headers, (b"cache-control", b"no-store")]}
            await send(message)

        if sum(len(name) + len(value) + 4 for name, value in scope["headers"]) > MAX_HEAD_BYTES:
            # h11 only limits a head that arrives in pieces; one sent at once is checked here.
            refusal = json_error(431, "request head too large", {"Connection": "close"})
            await refusal(scope, receive, send_no_store)
            return
        try:
            replay = await _read_body(scope, receive)
        except _BodyTooLarge:
            await json_error(413, "request body too large")(scope, receive, send_no_store)
            return
        except TimeoutError:
            await json_error(408, f"request body not received within {BODY_TIMEOUT_S:g} s")(
                scope, receive, send_no_store
            )
            return
        except _ClientGone:  # left before its body was in: nobody to answer
            return
        try:
            with self.open_responses.track():
                await self.app(scope, replay, send_no_store)
        except Exception as error:  # a fault in one route must never end the server (nor the stream)
            log.exception("HTTP: %s %s failed", scope["method"], scope["path"])
            if not started:  # else the connection just closes: the client sees a cut response
                await json_error(500, f"internal error: {type(error).__name__}")(scope, receive, send_no_store)


async def _read_body(scope: Scope, receive: Receive) -> Receive:
    """Read the whole request body under the limits; a `receive` that hands it over in one
    message, then passes on to the connection (where a long response hears of a disconnect)."""
    declared = dict(scope["headers"]).get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _BodyTooLarge
    body = bytearray()
    with anyio.fail_after(BODY_TIMEOUT_S):
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _ClientGone
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                raise _BodyTooLarge
            if not message.get("more_body", False):
                break
    pending: list[Message] = [{"type": "http.request", "body": bytes(body), "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


async def serve(
    app: Starlette, host: str, port: int, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Serve `app` (made by build_app) on host:port until cancelled; reports the bound port
    (port 0: a free one).

    Runs on asyncio and on trio. Cancellation of the caller's scope ends the app's open
    responses and becomes hypercorn's shutdown trigger: the listening socket closes, idle
    connections close, connections still busy get SHUTDOWN_GRACE_S, and only then does this
    return (hypercorn's asyncio runner cannot be cancelled half-way without leaving its
    connection tasks behind).
    """
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.errorlog = _server_log
    config.accesslog = None
    config.h11_max_incomplete_size = MAX_HEAD_BYTES
    config.keep_alive_timeout = HEAD_TIMEOUT_S
    config.graceful_timeout = SHUTDOWN_GRACE_S
    config.include_server_header = False
    sockets = config.create_sockets()  # bound here so that the port is known before serving
    for sock in sockets.insecure_sockets:
        sock.listen(config.backlog)
    bound = sockets.insecure_sockets[0].getsockname()[1]
    log.info("HTTP: health, metrics and studio on http://%s:%d/", host, bound)

    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_run_shielded, _runner(), app, config, sockets, stop.wait)
        task_status.started(bound)
        try:
            await anyio.sleep_forever()
        finally:
            app.state.open_responses.close()
            stop.set()  # _run_shielded now ends within the grace period


Runner = Callable[[ASGIApp, Config, Sockets, Callable[[], Awaitable[Any]]], Awaitable[None]]


async def _run_shielded(
    runner: Runner, app: ASGIApp, config: Config, sockets: Sockets, trigger: Callable[[], Awaitable[Any]]
) -> None:
    try:
        with anyio.CancelScope(shield=True):  # stopped by `trigger`, never half-way
            await runner(app, config, sockets, trigger)
    finally:
        for sock in sockets.insecure_sockets:
            _close_quietly(sock)


def _runner() -> Runner:
    """hypercorn's worker for the running event loop (the one entry that accepts bound sockets)."""
    from hypercorn.utils import wrap_app

    try:
        asyncio.get_running_loop()
    except RuntimeError:  # anyio runs on asyncio or trio: no asyncio loop here means trio
        from hypercorn.trio.run import worker_serve
    else:
        from hypercorn.asyncio.run import worker_serve  # type: ignore[assignment]

    async def run(app: ASGIApp, config: Config, sockets: Sockets, trigger: Callable[[], Awaitable[Any]]) -> None:
        wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
        await worker_serve(wrapped, config, sockets=sockets, shutdown_trigger=trigger)

    return run


def _close_quietly(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass

