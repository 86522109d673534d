"""One operator port for many stations: health per station and overall, metrics labelled by
station, each station's studio under /stations/NAME/, and stations that come and go between
requests. The real app on a real socket over stand-in services (the real statechart and
metrics of each, media numbers set by the test), on asyncio and trio; the last test publishes
to the real RabbitMQ.
"""

from __future__ import annotations

import json
import re
import uuid
from urllib.parse import urljoin

import anyio
import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text
from support import amqp
from support.operator import EventReader, StandInService, call, make_settings, serving

from poc.messages import MessageLimits, TextMessage, parse_message
from poc.ops.health import health_report
from poc.ops.station_metrics import STATIONS_GAUGE
from poc.ops.stations_http import StationView, stations_app

pytestmark = pytest.mark.anyio

TOKEN = "stations-token-of-enough-length"


def station(name: str, **env: str) -> tuple[StandInService, StationView]:
    service = StandInService(make_settings(RTMP_URL=f"rtmp://127.0.0.1:1935/live/{name}key", **env))
    view = StationView(name=name, settings=service.settings, status=service.status, metrics=service.metrics,
                       chart=service.chart)  # fmt: skip
    return service, view


class Publishers:
    """A recording publisher per station: what each station's studio sent, in order."""

    def __init__(self) -> None:
        self.sent: dict[str, list[dict]] = {}

    def __call__(self, view: StationView):
        sent = self.sent.setdefault(view.name, [])

        async def publish(body: dict, control: bool) -> str:
            sent.append(body)
            return str(body["id"])

        return publish


def client(port: int, **kwargs) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5, **kwargs)


class Port:
    """Stations served on one port; the test changes `current` between requests."""

    def __init__(self, *names: str, **env: str) -> None:
        self.services: dict[str, StandInService] = {}
        self.current: dict[str, StationView] = {}
        for name in names:
            self.add(name)
        self.publishers = Publishers()
        self.settings = make_settings(**env)

    def add(self, name: str) -> StandInService:
        service, self.current[name] = station(name)
        self.services[name] = service
        return service

    def serve(self, publisher_for=None):
        app = stations_app(self.settings, lambda: self.current, publisher_for=publisher_for or self.publishers,
                           batchers=lambda: [])  # stand-ins on the warp engine: no MuseTalk model
        return serving(app)


# -- health ----------------------------------------------------------------------------------


async def test_one_station_off_air_is_503_on_its_own_healthz_and_the_process_stays_200():
    port = Port("a", "b", "c")
    port.services["b"].on_air = False
    port.services["c"].on_air, port.services["c"].stopped = False, True  # stopped on purpose: healthy
    async with port.serve() as p, client(p) as http:
        overall = await http.get("/healthz")
        each = {name: await http.get(f"/stations/{name}/healthz") for name in port.current}
    assert overall.status_code == 200
    body = overall.json()
    assert body["healthy"] is True and body["unhealthy"] == ["b"]
    assert [each[n].status_code for n in ("a", "b", "c")] == [200, 503, 200]
    for name, service in port.services.items():  # the single-station report, station by station
        assert body["stations"][name] == each[name].json() == health_report(service.status())
    assert body["stations"]["c"]["stream"] == "stopped by operator"


async def test_the_process_is_503_only_when_no_station_is_healthy_or_there_are_none():
    port = Port("a", "b")
    for service in port.services.values():
        service.on_air = False
    async with port.serve() as p, client(p) as http:
        all_off = await http.get("/healthz")
        port.current.clear()
        none = await http.get("/healthz")
        unknown = await http.get("/stations/a/healthz")
    assert all_off.status_code == 503
    assert all_off.json()["unhealthy"] == ["a", "b"] and all_off.json()["reason"] == "no station is healthy"
    assert none.status_code == 503 and none.json() == {"healthy": False, "stations": {}, "unhealthy": [],
                                                       "reason": "no stations"}  # fmt: skip
    assert unknown.status_code == 404 and unknown.json() == {"error": "no station named 'a'"}


async def test_a_station_whose_status_fails_is_unhealthy_and_the_others_are_still_served():
    port = Port("a", "b")
    port.services["b"].broken = True
    async with port.serve() as p, client(p) as http:
        overall = await http.get("/healthz")
        own = await http.get("/stations/b/healthz")
        metrics = await http.get("/metrics")
        listing = await http.get("/api/stations")
    assert overall.status_code == 200 and overall.json()["unhealthy"] == ["b"]
    assert overall.json()["stations"]["b"] == {"healthy": False, "error": "status failed: AttributeError"}
    assert own.status_code == 500
    assert metrics.status_code == 200 and 'poc_frames_total{station="a"}' in metrics.text
    rows = {row["name"]: row for row in listing.json()["stations"]}
    assert rows["a"]["stream"] == "on air" and rows["b"]["error"] == "status failed: AttributeError"


# -- metrics ---------------------------------------------------------------------------------


def samples(text: str, parse=parse_text) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value; `_created` left out (a time, not a number to compare)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parse(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


async def test_metrics_carry_every_stations_series_labelled_with_its_name():
    port = Port("a", "b")
    a, b = port.services["a"], port.services["b"]
    a.metrics.frames.inc(7)
    b.metrics.frames.inc(3)
    a.metrics.message_on_air(0.4)
    b.metrics.message_settled("played")
    a.queued_seconds, b.queued_seconds = 4.5, 0.25
    async with port.serve() as p, client(p) as http:
        merged = await http.get("/metrics")
        own = {name: await http.get(f"/stations/{name}/metrics") for name in ("a", "b")}
    assert merged.status_code == 200 and merged.headers["content-type"].startswith("text/plain")
    found = samples(merged.text)
    assert found.pop((STATIONS_GAUGE, ())) == 2
    assert all(dict(labels).get("station") in ("a", "b") for _, labels in found)
    for name in ("a", "b"):  # each station's share is exactly its own registry, plus the label
        alone = samples(own[name].text)
        assert all("station" not in dict(labels) for _, labels in alone)
        share = {(n, tuple(sorted(l for l in labels if l[0] != "station"))): v
                 for (n, labels), v in found.items() if dict(labels)["station"] == name}  # fmt: skip
        assert share == alone
    assert found[("poc_frames_total", (("station", "a"),))] == 7
    assert found[("poc_frames_total", (("station", "b"),))] == 3
    assert found[("poc_queued_speech_seconds", (("station", "a"),))] == 4.5  # set when scraped
    assert found[("poc_queued_speech_seconds", (("station", "b"),))] == 0.25
    assert found[("poc_message_latency_seconds_count", (("stage", "on_air"), ("station", "a")))] == 1
    assert found[("poc_messages_total", (("outcome", "played"), ("station", "b")))] == 1
    types = {family.name: family.type for family in parse_text(merged.text)}
    assert types["poc_frames"] == "counter" and types["poc_output_fps"] == "gauge"
    assert types["poc_message_latency_seconds"] == "histogram" and types[STATIONS_GAUGE] == "gauge"


async def test_metrics_speak_openmetrics_with_each_family_once():
    port = Port("a", "b")
    async with port.serve() as p, client(p) as http:
        response = await http.get("/metrics", headers={"accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    families = list(parse_openmetrics(response.text))  # the parser refuses a family seen twice
    [frames] = [f for f in families if f.name == "poc_frames"]
    assert sorted(s.labels["station"] for s in frames.samples if s.name == "poc_frames_total") == ["a", "b"]


# -- the studio of each station --------------------------------------------------------------


async def test_a_line_said_on_one_station_goes_to_that_station_only():
    port = Port("a", "b")
    async with port.serve() as p, client(p) as http:
        said = await http.post("/stations/b/api/say", json={"text": "Only for b."})
        control = await http.post("/stations/a/api/control", json={"action": "clear"})
        refused = await http.post("/stations/a/api/say", json={"text": ""})
    assert said.status_code == 202 and control.status_code == 202 and refused.status_code == 400
    assert [body["data"] for body in port.publishers.sent["b"]] == ["Only for b."]
    assert [body.get("action") for body in port.publishers.sent["a"]] == ["clear"]


async def test_each_station_page_is_the_studio_and_its_relative_urls_resolve_under_its_prefix():
    port = Port("a", "b")
    port.services["b"].chart.send("message_accepted")
    async with port.serve() as p, client(p) as http:
        bare = await http.get("/stations/b")
        page = await http.get("/stations/b/")
        referenced = re.findall(r"""(?:src|href)="([^"]+)\"""", page.text)
        files = {ref: await http.get(urljoin("/stations/b/", ref)) for ref in referenced if not ref.startswith("data:")}
        status = await http.get("/stations/b/api/status")
        other = await http.get("/stations/a/api/status")
        missing = await http.get("/stations/b/api/nothing")
        unknown = await http.get("/stations/zz/")
    assert bare.status_code == 307 and bare.headers["location"] == "/stations/b/"
    assert page.status_code == 200 and "<video" in page.text
    assert {"static/studio.css", "static/hls.min.js", "static/studio.js"} <= set(files)
    assert all(r.status_code == 200 and r.content for r in files.values()), files
    assert status.json()["state"] == "processing" and other.json()["state"] == "idle"
    assert status.json()["hls_url"] == "http://127.0.0.1:8088/hls/bkey.m3u8"  # b's own preview
    assert missing.status_code == 404 and "error" in missing.json()
    assert unknown.status_code == 404 and unknown.json() == {"error": "no station named 'zz'"}


async def test_the_list_page_and_api_show_every_station_with_a_link_to_its_studio():
    port = Port("b", "a")
    port.services["a"].on_air = False
    async with port.serve() as p, client(p) as http:
        page = await http.get("/")
        script = await http.get("/static/stations.js")
        style = await http.get("/static/studio.css")
        listing = await http.get("/api/stations")
    assert page.status_code == 200 and 'id="stations"' in page.text
    assert 'src="static/stations.js"' in page.text and 'href="static/studio.css"' in page.text
    assert script.status_code == 200 and "api/stations" in script.text and style.status_code == 200
    assert listing.json() == {"stations": [
        {"name": "a", "path": "stations/a/", "healthy": False, "state": "idle", "stream": "off air",
         "queued_messages": 0, "queued_speech_seconds": 1.23},
        {"name": "b", "path": "stations/b/", "healthy": True, "state": "idle", "stream": "on air",
         "queued_messages": 0, "queued_speech_seconds": 1.23},
    ]}  # fmt: skip


async def test_stations_added_and_removed_between_requests_appear_and_disappear():
    port = Port("a")
    async with port.serve() as p, client(p) as http:
        before = await http.get("/api/stations")
        port.add("c").chart.send("message_accepted")
        added = await http.get("/api/stations")
        added_status = await http.get("/stations/c/api/status")
        del port.current["a"]
        removed = await http.get("/api/stations")
        gone = await http.get("/stations/a/api/status")
        health = await http.get("/healthz")
        metrics = await http.get("/metrics")
    assert [s["name"] for s in before.json()["stations"]] == ["a"]
    assert [s["name"] for s in added.json()["stations"]] == ["a", "c"]
    assert added_status.status_code == 200 and added_status.json()["state"] == "processing"
    assert [s["name"] for s in removed.json()["stations"]] == ["c"]
    assert gone.status_code == 404
    assert list(health.json()["stations"]) == ["c"]
    assert 'station="a"' not in metrics.text and 'station="c"' in metrics.text
    assert samples(metrics.text)[(STATIONS_GAUGE, ())] == 1


async def test_a_reloaded_station_gets_a_new_studio_and_the_old_one_s_event_streams_end():
    port = Port("a")
    async with port.serve() as p:
        async with await anyio.connect_tcp("127.0.0.1", p) as stream:
            await stream.send(b"GET /stations/a/api/events HTTP/1.1\r\nHost: studio\r\n\r\n")
            reader = EventReader(stream)
            assert b" 200 " in await reader.head()
            [(kind, first)] = await reader.events(1)
            assert (kind, first["state"]) == ("state", "idle")
            port.add("a").chart.send("message_accepted")  # a new view under the same name
            with anyio.fail_after(5):  # within the next snapshot (every second)
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    while True:
                        reader.buffer += await stream.receive()
        async with client(p) as http:
            status = await http.get("/stations/a/api/status")
            said = await http.post("/stations/a/api/say", json={"text": "To the new one."})
    assert status.json()["state"] == "processing"  # the new station's chart, not the old one's
    assert said.status_code == 202 and len(port.publishers.sent["a"]) == 1


# -- STUDIO_TOKEN ----------------------------------------------------------------------------


async def test_the_token_guards_the_list_and_station_studios_but_not_health_or_metrics():
    port = Port("a", HTTP_HOST="0.0.0.0", STUDIO_TOKEN=TOKEN)
    open_paths = ["/healthz", "/metrics", "/stations/a/healthz", "/stations/a/metrics"]
    guarded = ["/api/stations", "/static/stations.js", "/stations/a/api/status", "/stations/a/static/studio.js",
               "/stations/a"]  # fmt: skip
    async with port.serve() as p:
        async with client(p) as http:
            for path in open_paths:
                assert (await http.get(path)).status_code == 200, path
            for path in guarded:
                response = await http.get(path)
                assert response.status_code == 401 and "STUDIO_TOKEN" in response.json()["error"], path
            # A browser is sent to the login form, which comes back to the page it asked for.
            for page, login in (("/", "/login"), ("/stations/a/", "/login?next=%2Fstations%2Fa%2F")):
                response = await http.get(page)
                assert response.status_code == 303 and response.headers["location"] == login, page
            refused = await http.post("/stations/a/api/say", json={"text": "No token."})
            assert refused.status_code == 401
        # An open path's name inside a longer one opens nothing (sent raw: httpx would resolve "..").
        status, _, _ = await call(p, "GET", "/stations/a/healthz/../api/status")
        assert status == 401
        async with client(p, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            for path in ["/", "/stations/a/", *guarded[:4]]:
                assert (await http.get(path)).status_code == 200, path
            said = await http.post("/stations/a/api/say", json={"text": "With the token."})
            assert said.status_code == 202
    assert [body["data"] for body in port.publishers.sent["a"]] == ["With the token."]


# -- against the real RabbitMQ (aio-pika: asyncio only) --------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_said_lines_land_in_the_queue_of_the_station_they_were_said_on(rabbitmq):
    queues = {name: f"poc_test_stations_{name}_{uuid.uuid4().hex[:8]}" for name in ("a", "b")}
    current = {}
    for name, queue in queues.items():
        _, current[name] = station(name, RABBITMQ_QUEUE=queue)
    app = stations_app(make_settings(), lambda: current)  # the default publisher: RabbitMQ
    everything = [q for queue in queues.values() for q in (queue, queue + ".control")]
    try:
        async with serving(app) as p, client(p) as http:
            said = await http.post("/stations/b/api/say", json={"text": "Into b's queue."})
            assert said.status_code == 202, said.text
        landed = {name: await anyio.to_thread.run_sync(amqp.drain, queue) for name, queue in queues.items()}
    finally:
        await anyio.to_thread.run_sync(lambda: amqp.delete(*everything))
    assert landed["a"] == []
    [(raw, _)] = landed["b"]
    message = parse_message(raw, MessageLimits())
    assert isinstance(message, TextMessage) and message.data == "Into b's queue."
    assert message.id == json.loads(said.text)["id"]
