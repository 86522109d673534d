"""The studio: a browser page to watch the stream, send it lines and see the statechart live.

The page has no door of its own into the pipeline. POST /api/say and /api/control build the
same body `python -m poc send` builds, check it with poc.messages.parse_message under the
service's own limits (so a bad line gets, word for word, the reason the dead-letter queue would
have given), and publish it to RabbitMQ with poc.source.publish.publish. Whatever the page can
do, any producer on the queue can already do.

Routes: GET / (the page), GET /static/<file> (a fixed list: exact routes, so no path can reach
outside the folder), GET /api/status (one JSON snapshot), GET /api/events (server-sent events:
every statechart transition as it happens and a snapshot every second), POST /api/say and
POST /api/control (interrupt, clear, and stop/start for the stream itself). They are Starlette
routes; ops/http.py serves them, ops/auth.py puts them behind STUDIO_TOKEN when one is set.

The studio reads the service only through a status function (ops/status.py) and the chart it
listens to, so it never imports poc.app.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from poc.config import Settings, stream_key
from poc.jobs import Outcome
from poc.messages import InvalidMessage, MessageLimits, parse_message
from poc.ops.http import json_error
from poc.ops.status import ServiceStatus, StatusSource
from poc.source.connection import AmqpSettings
from poc.source.publish import PublishError, build_control, build_text, publish
from poc.statechart import StreamChart, mermaid_diagram

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
# name -> content type; anything not listed here is a 404 (the route table is exact).
STATIC_FILES = {
    "api.js": "text/javascript; charset=utf-8",
    "studio.js": "text/javascript; charset=utf-8",
    "studio.css": "text/css; charset=utf-8",
    "hls.min.js": "text/javascript; charset=utf-8",
    "hls.LICENSE.txt": "text/plain; charset=utf-8",
}
EVENTS_PATH = "/api/events"
SNAPSHOT_SECONDS = 1.0  # how often an open event stream gets a status snapshot
MAX_EVENT_CLIENTS = 8  # open event streams at once; each costs a task and a wake-up a second
SEND_TIMEOUT_S = 5.0  # a client that stops reading for this long is dropped
PUBLISH_TIMEOUT_S = 5.0  # so the page gets a real answer while the user still waits
LOCAL_RTMP_HOSTS = {"127.0.0.1", "localhost", "::1"}
LOCAL_HLS = "http://127.0.0.1:8088/hls/{key}.m3u8"  # scripts/rtmp_server.sh's default HLS port

_EVENT_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"x-accel-buffering", b"no")]

# publisher(body, control) -> message id; raises poc.source.publish.PublishError
Publisher = Callable[[dict[str, Any], bool], Awaitable[str]]


def studio_routes(
    settings: Settings, status: StatusSource, chart: StreamChart, *, publisher: Publisher | None = None
) -> list[Route]:
    """The studio's routes over a running service: `status` gives a fresh snapshot per call,
    `chart` is listened to for live transitions. `publisher` is for tests (default: RabbitMQ)."""
    studio = _Studio(settings, status, chart, publisher or amqp_publisher(settings))
    routes = [Route("/", studio.page, methods=["GET"])]
    for name, content_type in STATIC_FILES.items():
        routes.append(Route(f"/static/{name}", _static_handler(name, content_type), methods=["GET"]))
    routes += [
        Route("/api/status", studio.status, methods=["GET"]),
        Route("/api/say", studio.say, methods=["POST"]),
        Route("/api/control", studio.control, methods=["POST"]),
        Route(EVENTS_PATH, _EventStream(studio), methods=["GET"]),
    ]
    return routes


def hls_url(settings: Settings) -> str | None:
    """Where a browser can watch the stream: STUDIO_HLS_URL, else a guess for a local nginx.

    nginx-rtmp names HLS playlists after the stream key, and scripts/rtmp_server.sh serves them
    on port 8088 by default, so a stream published to a local RTMP server is guessed to be at
    http://127.0.0.1:8088/hls/<key>.m3u8. Anywhere else there is no way to know: None.
    """
    if settings.studio_hls_url:
        return settings.studio_hls_url
    host = urlsplit(settings.rtmp_url).hostname or ""
    key = stream_key(settings.rtmp_url)
    if host.lower() in LOCAL_RTMP_HOSTS and key:
        return LOCAL_HLS.format(key=key)
    return None


def amqp_publisher(settings: Settings) -> Publisher:
    """Publish the way `python -m poc send` does: one connection and a broker confirm each."""
    amqp = AmqpSettings.from_settings(settings)

    async def send(body: dict[str, Any], control: bool) -> str:
        return await publish(amqp, body, control=control)

    return send


def _static_handler(name: str, content_type: str) -> Callable[[Request], Awaitable[Response]]:
    body = (STATIC_DIR / name).read_bytes()  # read once: the files ship with the package

    async def handler(request: Request) -> Response:
        return Response(body, media_type=content_type)

    return handler


class _StateFeed:
    """Statechart listener that keeps the latest transitions for the open event streams.

    Every chart event is sent on the event loop (compositor ticks, the pipeline), which is the
    only place an anyio.Event may be set; a call from any other thread is still recorded, and
    its waiters find it at their next snapshot instead of at once.
    """

    def __init__(self) -> None:
        self.seq = 0
        self.recent: deque[tuple[int, dict[str, str]]] = deque(maxlen=64)
        self._changed: anyio.Event | None = None
        self._loop_thread = threading.get_ident()

    def after_transition(self, event: str, source: Any, target: Any) -> None:
        self.seq += 1
        self.recent.append((self.seq, {"state": target.id, "from": source.id, "event": event}))
        if self._changed is not None and threading.get_ident() == self._loop_thread:
            self._changed.set()
            self._changed = None

    async def wait(self, after: int, timeout: float) -> list[dict[str, str]]:
        """Transitions after sequence number `after`, waiting up to `timeout` for the first."""
        if self.seq == after:
            if self._changed is None:
                self._changed = anyio.Event()
            with anyio.move_on_after(timeout):
                await self._changed.wait()
        return [payload for seq, payload in self.recent if seq > after]


class _Studio:
    def __init__(self, settings: Settings, status: StatusSource, chart: StreamChart, publisher: Publisher) -> None:
        self.read_status = status
        self.publisher = publisher
        self.limits = MessageLimits.from_settings(settings)
        self.hls_url = hls_url(settings)
        self.mermaid = mermaid_diagram()
        self.feed = _StateFeed()
        chart.add_listener(self.feed)
        self.page_body = (STATIC_DIR / "index.html").read_bytes()
        self.event_clients = 0

    # -- reading -------------------------------------------------------------------------------

    def snapshot(self, now: ServiceStatus | None = None) -> dict[str, Any]:
        """The /api/status body (and each `status` event): the service's snapshot as the page
        shows it, with the page's own constants (limits, preview URL, chart text)."""
        now = now or self.read_status()
        return {
            "state": now.state,
            "on_air": now.on_air,
            "stopped": now.stopped,  # off air on purpose (the `stop` control) until a `start`
            "reconnecting": now.reconnecting,
            "output_fps": _rounded(now.output_fps, 2),
            "underrun_frames": now.underrun_frames,
            "dropped_frames": now.dropped_frames,
            "writer_restarts": now.writer_restarts,
            "queued_messages": now.queued_messages,
            "queued_seconds": round(now.queued_seconds, 2),
            "last_latency_seconds": _rounded(now.last_latency_seconds, 3),
            "mean_latency_seconds": _rounded(now.mean_latency_seconds, 3),
            "messages": {o.value: int(now.messages.get(o.value, 0)) for o in Outcome},
            "rabbitmq_connected": now.rabbitmq_connected,
            "max_text_chars": self.limits.max_text_chars,
            "hls_url": self.hls_url,
            "mermaid": self.mermaid,
        }

    async def page(self, request: Request) -> Response:
        return Response(self.page_body, media_type="text/html; charset=utf-8")

    async def status(self, request: Request) -> Response:
        return JSONResponse(self.snapshot())

    # -- acting (what a producer can do, and nothing more) -------------------------------------

    async def say(self, request: Request) -> Response:
        payload = await _json_object(request)
        if isinstance(payload, Response):
            return payload
        body = build_text(payload.get("text"))  # type: ignore[arg-type]  # parse_message judges it
        if "interrupt" in payload:
            body["interrupt"] = payload["interrupt"]  # as sent, so a non-boolean is refused
        # Interrupting speech goes to the control queue: on the main queue it would wait
        # behind the backlog it is meant to cut.
        return await self._check_and_publish(body, control=body.get("interrupt") is True)

    async def control(self, request: Request) -> Response:
        payload = await _json_object(request)
        if isinstance(payload, Response):
            return payload
        raw = {"type": "control", "action": payload.get("action")}
        try:
            action = parse_message(_encode(raw), self.limits).action  # type: ignore[union-attr]
        except InvalidMessage as error:
            return json_error(400, str(error))
        # parse_message normalised it (" Clear" -> "clear"); build_control adds the id and time.
        return await self._check_and_publish(build_control(action), control=True)

    async def _check_and_publish(self, body: dict[str, Any], control: bool) -> Response:
        try:
            parse_message(_encode(body), self.limits)
        except InvalidMessage as error:
            return json_error(400, str(error))
        try:
            with anyio.fail_after(PUBLISH_TIMEOUT_S):
                message_id = await self.publisher(body, control)
        except PublishError as error:
            return json_error(503, str(error))
        except TimeoutError:
            # The broker may have it all the same: sending again would say the words twice, as
            # a new message (a new id), so the page is told which id to look for first.
            return json_error(
                503,
                f"RabbitMQ did not confirm within {PUBLISH_TIMEOUT_S:g} s; the message (id {body['id']}) "
                "may still play: check before sending it again",
            )
        log.info("studio: sent %s message %s", body["type"], message_id)
        return JSONResponse({"id": message_id, "type": body["type"]}, status_code=202)

    # -- the event stream ----------------------------------------------------------------------

    async def stream_events(self, send: Callable[[bytes], Awaitable[None]]) -> None:
        """Write events until cancelled: transitions at once, a snapshot a second."""
        seen = self.feed.seq
        now = self.read_status()
        current = {"state": now.state, "from": None, "event": None}
        await send(b"retry: 2000\n\n" + _event("state", current) + _event("status", self.snapshot(now)))
        next_snapshot = anyio.current_time() + SNAPSHOT_SECONDS
        while True:
            changes = await self.feed.wait(seen, max(0.0, next_snapshot - anyio.current_time()))
            seen = self.feed.seq
            out = b"".join(_event("state", change) for change in changes)
            if anyio.current_time() >= next_snapshot:
                out += _event("status", self.snapshot())
                next_snapshot = anyio.current_time() + SNAPSHOT_SECONDS
            if out:
                await send(out)


class _EventStream:
    """GET /api/events as an ASGI app (a class, so Starlette hands it the raw connection): a
    response that stays open until the client leaves, stops reading for SEND_TIMEOUT_S, or the
    server shuts down. At most MAX_EVENT_CLIENTS at once; one more gets a 503."""

    def __init__(self, studio: _Studio) -> None:
        self.studio = studio

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        studio = self.studio
        if studio.event_clients >= MAX_EVENT_CLIENTS:
            refusal = json_error(503, f"too many event streams open (at most {MAX_EVENT_CLIENTS})")
            await refusal(scope, receive, send)
            return

        async def send_body(data: bytes) -> None:
            with anyio.fail_after(SEND_TIMEOUT_S):  # a client that stopped reading is dropped
                await send({"type": "http.response.body", "body": data, "more_body": True})

        studio.event_clients += 1
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _EVENT_HEADERS})
            async with anyio.create_task_group() as tg:
                tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
                try:
                    await studio.stream_events(send_body)
                except TimeoutError:
                    log.info("studio: an event stream's client stopped reading for %g s; dropped", SEND_TIMEOUT_S)
                except Exception:  # a studio fault must not stop the stream: this client is cut
                    log.exception("studio: event stream failed")
                finally:
                    tg.cancel_scope.cancel()
        finally:
            studio.event_clients -= 1
        # Returning without the final body message: the server closes the connection.


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


def _encode(body: dict[str, Any]) -> bytes:
    # The bytes publish() would put on the queue, so size limits count the same.
    text = json.dumps(body, ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (a "\ud83d" escape in the request: text cut inside an emoji) has no
        # UTF-8 form. Escaped, as a producer's JSON library would send it, it reaches
        # parse_message, which refuses it with the queue's own reason (never a 500).
        return json.dumps(body).encode("ascii")


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _origin_host(origin: str) -> str | None:
    """The host[:port] of an Origin header; None for one that is no URL ("http://[::1" makes
    urlsplit raise), which no browser sends for the page itself."""
    try:
        return urlsplit(origin).netloc
    except ValueError:
        return None


async def _json_object(request: Request) -> dict[str, Any] | Response:
    """The request's JSON object, or the 400/403 response that says why there is none."""
    origin = request.headers.get("origin")
    if origin and _origin_host(origin) != request.headers.get("host"):
        # A page on another site may post to a local port; the page itself is same-origin.
        return json_error(403, "cross-origin requests are refused")
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        # Also what keeps other sites out: a cross-site JSON post needs a CORS preflight,
        # which this server never grants.
        return json_error(400, "send the request body as application/json")
    try:
        payload = json.loads((await request.body()).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        return json_error(400, f"request body is not JSON: {error}".splitlines()[0])
    except RecursionError:  # "[[[[...": the C parser stops at the recursion limit, at no cost
        return json_error(400, "request body is not usable JSON: nested too deeply")
    if not isinstance(payload, dict):
        return json_error(400, "request body must be a JSON object")
    return payload
