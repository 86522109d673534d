"""The studio: a browser page to watch the stream, send it lines and see the statechart live.

The page has no door of its own into the pipeline. POST /api/say and /api/control build the
same body `python -m poc send` builds, check it with poc.messages.parse_message under the
service's own limits (so a bad line gets, word for word, the reason the dead-letter queue would
have given), and publish it to RabbitMQ with poc.source.publish.publish. Whatever the page can
do, any producer on the queue can already do.

Routes: GET / (the page), GET /static/<file> (a fixed list: exact routes, so no path can reach
outside the folder), GET /api/status (one JSON snapshot), GET /api/events (server-sent events:
every statechart transition as it happens and a snapshot every second), POST /api/say and
POST /api/control (interrupt, clear, and stop/start for the stream itself).

Server-sent events need a response that stays open, while poc.ops.http answers each connection
with one complete response under a 10 s limit. Rather than fork that server, the studio puts a
thin front on its connection handler: it reads the request line, keeps GET /api/events for itself
and hands every other connection, with the bytes it already read, to the original handler.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable
from urllib.parse import urlsplit

import anyio
from anyio.abc import ByteStream

from poc.config import Settings, stream_key
from poc.jobs import Outcome
from poc.messages import InvalidMessage, MessageLimits, parse_message
from poc.ops.http import CLIENT_GONE, HttpServer, Request, Response, json_response
from poc.source.connection import AmqpSettings
from poc.source.publish import PublishError, build_control, build_text, publish
from poc.statechart import mermaid_diagram

if TYPE_CHECKING:
    from poc.app import Service

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
# name -> content type; anything not listed here is a 404 (the route table is exact).
STATIC_FILES = {
    "studio.js": "text/javascript; charset=utf-8",
    "studio.css": "text/css; charset=utf-8",
    "hls.min.js": "text/javascript; charset=utf-8",
    "hls.LICENSE.txt": "text/plain; charset=utf-8",
}
EVENTS_PATH = "/api/events"
SNAPSHOT_SECONDS = 1.0  # how often an open event stream gets a status snapshot
MAX_EVENT_CLIENTS = 8  # open event streams at once; each costs a task and a wake-up a second
SEND_TIMEOUT_S = 5.0  # a client that stops reading for this long is dropped
PUBLISH_TIMEOUT_S = 5.0  # under the HTTP server's 10 s limit, so the page gets a real answer
LOCAL_RTMP_HOSTS = {"127.0.0.1", "localhost", "::1"}
LOCAL_HLS = "http://127.0.0.1:8088/hls/{key}.m3u8"  # scripts/rtmp_server.sh's default HLS port

_EVENT_HEAD = (
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    "Cache-Control: no-store\r\nConnection: close\r\nX-Accel-Buffering: no\r\n\r\n"
).encode()

# publisher(body, control) -> message id; raises poc.source.publish.PublishError
Publisher = Callable[[dict[str, Any], bool], Awaitable[str]]


def install_studio(http: HttpServer, service: "Service", *, publisher: Publisher | None = None) -> None:
    """Add the studio's routes to `http` (before it serves). `publisher` is for tests."""
    studio = _Studio(service, publisher or amqp_publisher(service.settings))
    http.route("GET", "/", studio.page)
    for name, content_type in STATIC_FILES.items():
        http.route("GET", f"/static/{name}", _static_handler(name, content_type))
    http.route("GET", "/api/status", studio.status)
    http.route("POST", "/api/say", studio.say)
    http.route("POST", "/api/control", studio.control)
    http.route_stream("GET", EVENTS_PATH, studio.open_event_stream)


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
        return 200, content_type, body

    return handler


class _LatencyWatch:
    """The latest dequeue → on-air delay, read from the pipeline's `on_air` latency histogram.

    The histogram keeps only a sum and a count, so the newest value is the growth of the sum
    over the growth of the count since the last look (a mean, if several messages went on air
    in between; the studio looks at least once a second and on every transition).
    """

    def __init__(self, metrics: Any) -> None:
        self._registry = metrics.registry
        self._count = 0.0
        self._sum = 0.0
        self.last: float | None = None

    def read(self) -> tuple[float | None, float | None]:
        """(latest, mean over all) in seconds; None before the first message went on air."""
        labels = {"stage": "on_air"}
        count = self._registry.get_sample_value("poc_message_latency_seconds_count", labels) or 0.0
        total = self._registry.get_sample_value("poc_message_latency_seconds_sum", labels) or 0.0
        if count > self._count:
            self.last = (total - self._sum) / (count - self._count)
            self._count, self._sum = count, total
        return self.last, (total / count if count else None)


class _StateFeed:
    """Statechart listener that keeps the latest transitions for the open event streams.

    Every chart event is sent on the event loop (compositor ticks, the pipeline), which is the
    only place an anyio.Event may be set; a call from any other thread is still recorded, and
    its waiters find it at their next snapshot instead of at once.
    """

    def __init__(self, on_transition: Callable[[], None]) -> None:
        self.seq = 0
        self.recent: deque[tuple[int, dict[str, str]]] = deque(maxlen=64)
        self._on_transition = on_transition
        self._changed: anyio.Event | None = None
        self._loop_thread = threading.get_ident()

    def after_transition(self, event: str, source: Any, target: Any) -> None:
        self.seq += 1
        self.recent.append((self.seq, {"state": target.id, "from": source.id, "event": event}))
        self._on_transition()
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
    def __init__(self, service: "Service", publisher: Publisher) -> None:
        settings = service.settings
        self.service = service
        self.publisher = publisher
        self.limits = MessageLimits(
            max_body_bytes=settings.max_body_bytes,
            max_text_chars=settings.max_text_chars,
            max_audio_seconds=settings.max_audio_seconds,
        )
        self.hls_url = hls_url(settings)
        self.mermaid = mermaid_diagram()
        self.latency = _LatencyWatch(service.metrics)
        self.feed = _StateFeed(self.latency.read)
        service.pipeline.chart.add_listener(self.feed)
        self.page_body = (STATIC_DIR / "index.html").read_bytes()
        self.event_clients = 0

    # -- reading -------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        service = self.service
        pipeline, writer, registry = service.pipeline, service.writer, service.metrics.registry
        last, mean = self.latency.read()
        source_status = getattr(service.source, "status", None)
        outcomes = {
            o.value: int(registry.get_sample_value("poc_messages_total", {"outcome": o.value}) or 0)
            for o in Outcome
        }
        on_air = bool(writer.up)
        stopped = bool(service.stopped_by_operator)
        return {
            "state": pipeline.chart.state_id,
            "on_air": on_air,
            "stopped": stopped,  # off air on purpose (the `stop` control) until a `start`
            # Not on air after ffmpeg was restarted at least once: the writer is retrying the
            # RTMP server. Not on air before any restart: still starting up.
            "reconnecting": not on_air and not stopped and writer.restarts > 0,
            "output_fps": _rounded(registry.get_sample_value("poc_output_fps"), 2),
            "underrun_frames": int(pipeline.compositor.underruns),
            "dropped_frames": int(writer.dropped),
            "writer_restarts": int(writer.restarts),
            "queued_messages": len(pipeline.queued_jobs),
            "queued_seconds": round(pipeline.queued_seconds(), 2),
            "last_latency_seconds": _rounded(last, 3),
            "mean_latency_seconds": _rounded(mean, 3),
            "messages": outcomes,
            "rabbitmq_connected": bool(getattr(source_status, "connected", False)),
            "max_text_chars": self.limits.max_text_chars,
            "hls_url": self.hls_url,
            "mermaid": self.mermaid,
        }

    async def page(self, request: Request) -> Response:
        return 200, "text/html; charset=utf-8", self.page_body

    async def status(self, request: Request) -> Response:
        return json_response(200, self.snapshot())

    # -- acting (what a producer can do, and nothing more) -------------------------------------

    async def say(self, request: Request) -> Response:
        payload = _json_object(request)
        if isinstance(payload, tuple):
            return payload
        body = build_text(payload.get("text"))  # type: ignore[arg-type]  # parse_message judges it
        if "interrupt" in payload:
            body["interrupt"] = payload["interrupt"]  # as sent, so a non-boolean is refused
        return await self._check_and_publish(body, control=False)

    async def control(self, request: Request) -> Response:
        payload = _json_object(request)
        if isinstance(payload, tuple):
            return payload
        raw = {"type": "control", "action": payload.get("action")}
        try:
            action = parse_message(_encode(raw), self.limits).action  # type: ignore[union-attr]
        except InvalidMessage as error:
            return json_response(400, {"error": str(error)})
        # parse_message normalised it (" Clear" -> "clear"); build_control adds the id and time.
        return await self._check_and_publish(build_control(action), control=True)

    async def _check_and_publish(self, body: dict[str, Any], control: bool) -> Response:
        try:
            parse_message(_encode(body), self.limits)
        except InvalidMessage as error:
            return json_response(400, {"error": str(error)})
        try:
            with anyio.fail_after(PUBLISH_TIMEOUT_S):
                message_id = await self.publisher(body, control)
        except PublishError as error:
            return json_response(503, {"error": str(error)})
        except TimeoutError:
            return json_response(503, {"error": f"RabbitMQ did not confirm within {PUBLISH_TIMEOUT_S:g} s"})
        log.info("studio: sent %s message %s", body["type"], message_id)
        return json_response(202, {"id": message_id, "type": body["type"]})

    # -- the event stream ----------------------------------------------------------------------

    async def open_event_stream(self, request: Request, stream: ByteStream) -> None:
        """Answer GET /api/events on `stream` (the request is read) until the client leaves."""
        if self.event_clients >= MAX_EVENT_CLIENTS:
            body = json.dumps({"error": f"too many event streams open (at most {MAX_EVENT_CLIENTS})"})
            head = (
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            await stream.send((head + body).encode())
            return

        async def send(data: bytes) -> None:
            with anyio.fail_after(SEND_TIMEOUT_S):
                await stream.send(data)

        self.event_clients += 1
        try:
            await send(_EVENT_HEAD)
            await self.stream_events(send)
        except Exception as error:  # see _guarded: a studio fault must not stop the stream
            if not isinstance(error, CLIENT_GONE):
                log.exception("studio: event stream failed")
        finally:
            self.event_clients -= 1

    async def stream_events(self, send: Callable[[bytes], Awaitable[None]]) -> None:
        """Write events until the client goes away: transitions at once, a snapshot a second."""
        seen = self.feed.seq
        current = {"state": self.service.pipeline.chart.state_id, "from": None, "event": None}
        await send(b"retry: 2000\n\n" + _event("state", current) + _event("status", self.snapshot()))
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


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


def _encode(body: dict[str, Any]) -> bytes:
    # The bytes publish() would put on the queue, so size limits count the same.
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _json_object(request: Request) -> dict[str, Any] | Response:
    """The request's JSON object, or the 400/403 response that says why there is none."""
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        # A page on another site may post to a local port; the page itself is same-origin.
        return json_response(403, {"error": "cross-origin requests are refused"})
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        # Also what keeps other sites out: a cross-site JSON post needs a CORS preflight,
        # which this server never grants.
        return json_response(400, {"error": "send the request body as application/json"})
    try:
        payload = request.json()
    except (UnicodeDecodeError, ValueError) as error:
        return json_response(400, {"error": f"request body is not JSON: {error}".splitlines()[0]})
    if not isinstance(payload, dict):
        return json_response(400, {"error": "request body must be a JSON object"})
    return payload
