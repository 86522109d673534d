"""The studio's HTTP API: what the page may send, what it is told back, and what it sees live.

Most tests run the real operator app (Starlette routes on hypercorn, on a real socket) over a
stand-in service (the real statechart and metrics, media numbers set by the test) and a
recording publisher, on both asyncio and trio. The last one publishes to the real RabbitMQ, as
the running service does.
"""

from __future__ import annotations

import json
import re
import uuid

import anyio
import pytest
from support import amqp
from support.operator import EventReader, StandInService, call, make_settings as settings_with, serving

from poc.messages import ControlMessage, InvalidMessage, MessageLimits, TextMessage, parse_message
from poc.ops.studio import MAX_EVENT_CLIENTS, STATIC_FILES, hls_url
from poc.source.publish import PublishError
from poc.statechart import mermaid_diagram

pytestmark = pytest.mark.anyio
LIMIT = 120  # MAX_TEXT_CHARS for these tests


def make_settings(**env: str):
    defaults = {"MAX_TEXT_CHARS": str(LIMIT), "RTMP_URL": "rtmp://127.0.0.1:1935/live/studiokey"}
    return settings_with(**{**defaults, **env})


def fake_service(**env: str) -> StandInService:
    """What the studio reads from a Service: the real chart and metrics, the rest set here."""
    return StandInService(make_settings(**env))


class RecordingPublisher:
    def __init__(self, error: Exception | None = None) -> None:
        self.sent: list[tuple[dict, bool]] = []
        self.error = error

    async def __call__(self, body: dict, control: bool) -> str:
        if self.error is not None:
            raise self.error
        self.sent.append((body, control))
        return str(body["id"])


def running_studio(service: StandInService, publisher=None):
    return serving(service.app(publisher))


def queue_reason(body: dict) -> str:
    """What the consumer would dead-letter this queue body with."""
    with pytest.raises(InvalidMessage) as caught:
        parse_message(json.dumps(body).encode(), MessageLimits(max_text_chars=LIMIT))
    return str(caught.value)


async def test_the_page_and_only_its_own_files_are_served():
    async with running_studio(fake_service(), RecordingPublisher()) as port:
        status, headers, page = await call(port, "GET", "/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        html = page.decode()
        assert "<video" in html and 'id="say"' in html
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "the page must not load from a CDN"
        referenced = re.findall(r"""(?:src|href)="static/([^"]+)\"""", html)
        assert {"hls.min.js", "studio.js", "studio.css"} <= set(referenced)
        for name in referenced:
            status, headers, content = await call(port, "GET", f"/static/{name}")
            assert status == 200 and content, name
            assert headers["content-type"] == STATIC_FILES[name]
        for path in ("/static/../studio.py", "/static/%2e%2e/studio.py", "/static/", "/static/index.html",
                     "/static/nothing.js"):  # fmt: skip
            status, _, _ = await call(port, "GET", path)
            assert status == 404, path


async def test_status_reports_state_numbers_latency_and_the_preview_url():
    service = fake_service()
    metrics = service.metrics
    metrics.set_output_fps(29.97)
    for outcome in ("played", "played", "dead_lettered"):
        metrics.message_settled(outcome)
    async with running_studio(service, RecordingPublisher()) as port:
        metrics.message_on_air(0.5)
        _, _, first = await call(port, "GET", "/api/status")
        metrics.message_on_air(0.9)
        service.chart.send("message_accepted")
        status, _, body = await call(port, "GET", "/api/status")
    assert status == 200
    report = json.loads(body)
    assert json.loads(first)["last_latency_seconds"] == 0.5
    assert report["state"] == "processing"
    assert report["on_air"] is True and report["reconnecting"] is False
    assert report["output_fps"] == 29.97
    assert report["underrun_frames"] == 3
    assert report["queued_messages"] == 0 and report["queued_seconds"] == 1.23
    assert report["last_latency_seconds"] == 0.9  # the newest one, not the mean
    assert report["mean_latency_seconds"] == 0.7
    assert report["messages"]["played"] == 2 and report["messages"]["dead_lettered"] == 1
    assert report["messages"]["interrupted"] == 0
    assert report["hls_url"] == "http://127.0.0.1:8088/hls/studiokey.m3u8"
    assert report["mermaid"] == mermaid_diagram()
    assert report["max_text_chars"] == LIMIT


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # a plain function: one backend is enough
@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"STUDIO_HLS_URL": "https://cdn.example/live/x.m3u8"}, "https://cdn.example/live/x.m3u8"),
        ({"RTMP_URL": "rtmp://localhost/live/abc"}, "http://127.0.0.1:8088/hls/abc.m3u8"),
        ({"RTMP_URL": "rtmp://a.rtmp.youtube.com/live2/secret-key"}, None),
    ],
)
async def test_preview_url_is_the_setting_else_a_local_nginx_guess(env, expected):
    assert hls_url(make_settings(**env)) == expected


@pytest.mark.parametrize(
    ("request_body", "queue_body"),
    [
        ({"text": ""}, {"type": "text", "data": ""}),
        ({"text": "   \n "}, {"type": "text", "data": "   \n "}),
        ({"text": "x" * (LIMIT + 1)}, {"type": "text", "data": "x" * (LIMIT + 1)}),
        ({"text": 42}, {"type": "text", "data": 42}),
        ({}, {"type": "text", "data": None}),
        ({"text": "hi", "interrupt": "yes"}, {"type": "text", "data": "hi", "interrupt": "yes"}),
    ],
)
async def test_bad_lines_get_the_reason_the_queue_would_give_and_are_not_sent(request_body, queue_body):
    publisher = RecordingPublisher()
    async with running_studio(fake_service(), publisher) as port:
        status, _, body = await call(port, "POST", "/api/say", request_body)
    assert status == 400
    assert json.loads(body) == {"error": queue_reason(queue_body)}
    assert publisher.sent == []


@pytest.mark.parametrize(
    ("raw", "headers", "status", "fragment"),
    [
        (b"not json", {"Content-Type": "application/json"}, 400, "not JSON"),
        (b"[1, 2]", {"Content-Type": "application/json"}, 400, "JSON object"),
        (b'{"text": "hi"}', {"Content-Type": "text/plain"}, 400, "application/json"),
        (b'{"text": "hi"}', {"Content-Type": "application/json", "Origin": "http://evil.example"}, 403,
         "cross-origin"),
    ],
)
async def test_requests_that_are_not_a_json_object_from_the_page_are_refused(raw, headers, status, fragment):
    publisher = RecordingPublisher()
    async with running_studio(fake_service(), publisher) as port:
        got, _, body = await call(port, "POST", "/api/say", raw, headers)
    error = json.loads(body)["error"]
    assert got == status and fragment in error and "\n" not in error
    assert publisher.sent == []


async def test_a_good_line_is_published_as_a_valid_queue_message():
    publisher = RecordingPublisher()
    async with running_studio(fake_service(), publisher) as port:
        status, _, body = await call(port, "POST", "/api/say", {"text": "Hello there.", "interrupt": True},
                                     {"Origin": f"http://127.0.0.1:{port}"})  # fmt: skip
    assert status == 202
    [(sent, control)] = publisher.sent
    assert control is True  # interrupting speech must not wait behind the main queue's backlog
    message = parse_message(json.dumps(sent).encode(), MessageLimits())
    assert isinstance(message, TextMessage)
    assert (message.data, message.interrupt) == ("Hello there.", True)
    assert json.loads(body)["id"] == message.id


async def test_controls_are_published_to_the_control_queue_and_unknown_ones_refused():
    publisher = RecordingPublisher()
    async with running_studio(fake_service(), publisher) as port:
        for action in ("interrupt", " Clear", "stop", "START"):  # the queue accepts either spelling
            status, _, _ = await call(port, "POST", "/api/control", {"action": action})
            assert status == 202
        status, _, body = await call(port, "POST", "/api/control", {"action": "self-destruct"})
    assert status == 400
    assert json.loads(body)["error"] == queue_reason({"type": "control", "action": "self-destruct"})
    assert [c for _, c in publisher.sent] == [True, True, True, True]
    actions = [parse_message(json.dumps(b).encode(), MessageLimits()) for b, _ in publisher.sent]
    assert all(isinstance(a, ControlMessage) for a in actions)
    assert [a.action for a in actions] == ["interrupt", "clear", "stop", "start"]


async def test_a_stopped_stream_is_shown_as_stopped_not_as_reconnecting():
    service = fake_service()
    service.on_air, service.writer_restarts = False, 1  # ffmpeg ran before the stop
    service.stopped = True
    async with running_studio(service, RecordingPublisher()) as port:
        _, _, body = await call(port, "GET", "/api/status")
        _, _, page = await call(port, "GET", "/")
    report = json.loads(body)
    assert report["stopped"] is True and report["on_air"] is False and report["reconnecting"] is False
    html = page.decode()
    assert 'data-action="stop"' in html and 'data-action="start"' in html


async def test_a_broker_failure_is_a_503_with_its_one_line_reason():
    reason = "cannot publish to RabbitMQ at amqp://guest:***@127.0.0.1:1/: connection refused"
    async with running_studio(fake_service(), RecordingPublisher(PublishError(reason))) as port:
        status, _, body = await call(port, "POST", "/api/say", {"text": "Hello."})
    assert status == 503 and json.loads(body) == {"error": reason}


async def test_event_stream_pushes_each_transition_at_once_and_a_snapshot_every_second():
    service = fake_service()
    chart = service.chart
    async with running_studio(service, RecordingPublisher()) as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            with anyio.fail_after(5):
                reader = EventReader(stream)
                head = await reader.head()
                assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
                first = await reader.events(2)
                assert first[0] == ("state", {"state": "idle", "from": None, "event": None})
                assert first[1][0] == "status" and first[1][1]["state"] == "idle"
                # Other routes keep working while a stream is open.
                status, _, _ = await call(port, "GET", "/api/status")
                assert status == 200
                started = anyio.current_time()
                chart.send("message_accepted")
                chart.send("frames_ready")
                pushed = await reader.events(2)
                assert anyio.current_time() - started < 0.5  # not held back until the next snapshot
                assert pushed == [
                    ("state", {"state": "processing", "from": "idle", "event": "message_accepted"}),
                    ("state", {"state": "transitioning", "from": "processing", "event": "frames_ready"}),
                ]
                [(kind, snapshot)] = await reader.events(1)
                assert kind == "status" and snapshot["state"] == "transitioning"
                assert anyio.current_time() - started < 1.6
        status, _, _ = await call(port, "POST", "/api/events", {})
        assert status == 405


# -- against the real RabbitMQ (aio-pika: asyncio only) --------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_said_lines_and_controls_land_in_the_services_queues(rabbitmq):
    queue = f"poc_test_studio_{uuid.uuid4().hex[:8]}"
    service = fake_service(RABBITMQ_QUEUE=queue)
    try:
        async with running_studio(service) as port:
            status, _, body = await call(port, "POST", "/api/say", {"text": "Straight to the queue."})
            assert status == 202, body
            status, _, _ = await call(port, "POST", "/api/control", {"action": "clear"})
            assert status == 202
        speech = await anyio.to_thread.run_sync(amqp.drain, queue)
        control = await anyio.to_thread.run_sync(amqp.drain, queue + ".control")
    finally:
        await anyio.to_thread.run_sync(amqp.delete, queue, queue + ".control")
    [(raw, _)] = speech
    message = parse_message(raw, MessageLimits())
    assert isinstance(message, TextMessage) and message.data == "Straight to the queue."
    assert message.id == json.loads(body)["id"]
    [(raw, _)] = control
    assert parse_message(raw, MessageLimits()).action == "clear"


async def test_a_fault_in_the_studio_is_a_500_and_the_server_keeps_serving():
    service = fake_service()
    service.broken = True  # the snapshot now fails, as a bug in it would
    async with running_studio(service, RecordingPublisher()) as port:
        status, _, body = await call(port, "GET", "/api/status")
        assert status == 500 and json.loads(body) == {"error": "internal error: AttributeError"}
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"GET /api/events HTTP/1.1\r\nHost: studio\r\n\r\n")
            with anyio.fail_after(5):
                rest = b""
                try:
                    while True:
                        rest += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    pass  # the stream was closed instead of taking the server down
        status, _, _ = await call(port, "GET", "/")
        assert status == 200


async def test_open_event_streams_are_capped():
    async with running_studio(fake_service(), RecordingPublisher()) as port:
        streams = [await anyio.connect_tcp("127.0.0.1", port) for _ in range(MAX_EVENT_CLIENTS + 1)]
        try:
            heads = []
            for stream in streams:
                await stream.send(b"GET /api/events HTTP/1.1\r\nHost: studio\r\n\r\n")
                with anyio.fail_after(5):
                    heads.append(await EventReader(stream).head())
            assert all(h.startswith(b"HTTP/1.1 200") for h in heads[:-1])
            assert heads[-1].startswith(b"HTTP/1.1 503")
        finally:
            for stream in streams:
                await stream.aclose()
        # Closed streams free their places.
        with anyio.fail_after(5):
            while True:
                async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                    await stream.send(b"GET /api/events HTTP/1.1\r\nHost: studio\r\n\r\n")
                    if (await EventReader(stream).head()).startswith(b"HTTP/1.1 200"):
                        break
                await anyio.sleep(0.1)
