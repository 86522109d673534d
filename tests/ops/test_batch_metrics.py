"""The shared MuseTalk batcher's counters on /metrics, as an operator scrapes them: batches by
padded shape, real rows (per station with many stations), pad rows, failed batches, and how many
stations a batch held; once per process, and absent without a batcher (the warp engine).

A real batcher (poc.face.musetalk.batcher) runs a stand-in model (plain numbers, as in
tests/face/musetalk/test_shapes.py), so no weights are needed; the app is the real one, served
on a socket: for one stream through the host's own wiring, for many through stations_app."""

from __future__ import annotations

import socket
import threading
from types import SimpleNamespace
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text
from support.operator import StandInService, make_settings, serving
from support.polling import wait_until

from poc.face.musetalk.batcher import CrossStationBatcher
from poc.host import Host
from poc.ops.batch_metrics import BatcherSource
from poc.ops.stations_http import StationView, stations_app

pytestmark = pytest.mark.anyio

WAIT_S = 10.0
BAD_ROW = -1  # the stand-in model raises on a batch holding it


class StandInModel:
    """Plain numbers through the batcher; the first batch waits for `release`, so that the rows
    submitted meanwhile queue up and go through together."""

    def __init__(self) -> None:
        self.running, self.release = threading.Event(), threading.Event()

    def __call__(self, batch: list[int]) -> list[int]:
        if not self.running.is_set():
            self.running.set()
            assert self.release.wait(WAIT_S)
        if BAD_ROW in batch:
            raise FloatingPointError("overflow")
        return [10 * row for row in batch]


def run_two_stations() -> CrossStationBatcher:
    """North and south (batch size 8 each) talk; the caller closes the batcher. The batches:
    north's 1 row alone (shape 1); north's 2 and south's 3 together (5 rows run as 8: 3 pads);
    south's 3 alone (run as 4: 1 pad); south's bad row alone (shape 1, fails)."""
    model = StandInModel()
    batcher = CrossStationBatcher(model)
    north, south = batcher.join("north", 8), batcher.join("south", 8)
    first = threading.Thread(target=north.submit, args=([0], [0.0]))
    first.start()
    assert model.running.wait(WAIT_S)
    queued = [
        threading.Thread(target=north.submit, args=([1, 2], [0.0, 0.0])),
        threading.Thread(target=south.submit, args=([3, 4, 5], [0.0, 0.0, 0.0])),
    ]
    for thread in queued:
        thread.start()
    wait_until(lambda: batcher.waiting() == {"north": 2, "south": 3}, WAIT_S, step=0.01)
    model.release.set()
    for thread in (first, *queued):
        thread.join(WAIT_S)
    assert south.submit([6, 7, 8], [0.0] * 3) == [60, 70, 80]
    south.submit([BAD_ROW], [0.0])
    return batcher


# What run_two_stations ran, as a scrape must show it.
SHAPES = {"1": 2, "4": 1, "8": 1}
ROWS = {"north": 3, "south": 7}
PADDED_ROWS = 3 + 1
FAILED = 1
STATIONS_HELD = {"1": 3, "2": 4, "3": 4, "+Inf": 4}  # cumulative buckets: 3 batches alone, 1 shared
STATIONS_SUM = 3 * 1 + 1 * 2


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of the poc_face_ families, `_created` left out (a time, not a count)."""
    return [
        (s.name, s.labels, s.value)
        for family in parse_text(text)
        for s in family.samples
        if s.name.startswith("poc_face_") and not s.name.endswith("_created")
    ]


def by_label(found: list[tuple[str, dict[str, str], float]], name: str, label: str) -> dict[str, float]:
    return {labels[label]: value for n, labels, value in found if n == name}


def one(found: list[tuple[str, dict[str, str], float]], name: str) -> float:
    [value] = [value for n, _, value in found if n == name]
    return value


def assert_batches_shown(found: list[tuple[str, dict[str, str], float]]) -> None:
    assert by_label(found, "poc_face_batches_total", "shape") == SHAPES
    assert one(found, "poc_face_padded_rows_total") == PADDED_ROWS
    assert one(found, "poc_face_failed_batches_total") == FAILED
    buckets = by_label(found, "poc_face_batch_stations_bucket", "le")
    assert {le: buckets[le] for le in STATIONS_HELD} == STATIONS_HELD
    assert one(found, "poc_face_batch_stations_count") == STATIONS_HELD["+Inf"]
    assert one(found, "poc_face_batch_stations_sum") == STATIONS_SUM


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def loaded(*batchers: CrossStationBatcher) -> BatcherSource:
    """What the process's table of loaded models would list: these batchers until closed."""
    return lambda: [batcher for batcher in batchers if not batcher.closed]


async def scrape_single_stream(batchers: BatcherSource) -> str:
    """GET /metrics from the operator's port as the host serves it for one stream."""
    port = free_port()
    host = Host(make_settings(HTTP_PORT=str(port)))
    host.batchers = batchers
    service = StandInService(host.settings)
    single: Any = SimpleNamespace(status=service.status, metrics=service.metrics,
                                  pipeline=SimpleNamespace(chart=service.chart))  # fmt: skip
    async with anyio.create_task_group() as tg:
        await host._serve_http(tg, single)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            response = await http.get("/metrics")
        tg.cancel_scope.cancel()
    assert response.status_code == 200
    return response.text


def stations_port(*names: str, batchers: BatcherSource) -> Any:
    views = {}
    for name in names:
        service = StandInService(make_settings())
        views[name] = StationView(name=name, settings=service.settings, status=service.status,
                                  metrics=service.metrics, chart=service.chart)  # fmt: skip
    return serving(stations_app(make_settings(), lambda: views, batchers=batchers))


async def test_one_stream_shows_the_batchers_counts_and_loses_them_with_the_model():
    batcher = run_two_stations()
    try:
        found = samples(await scrape_single_stream(loaded(batcher)))
        assert_batches_shown(found)
        assert one(found, "poc_face_batch_rows_total") == sum(ROWS.values())  # one stream: no station label
    finally:
        assert batcher.close(WAIT_S)
    assert samples(await scrape_single_stream(loaded(batcher))) == []  # its model released: no batcher, no series


async def test_many_stations_show_the_process_series_once_and_rows_by_station():
    batcher = run_two_stations()
    try:
        async with stations_port("north", "south", batchers=loaded(batcher)) as port:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
                merged = (await http.get("/metrics")).text
                openmetrics = (await http.get("/metrics", headers={"accept": "application/openmetrics-text"})).text
                own = (await http.get("/stations/north/metrics")).text
    finally:
        assert batcher.close(WAIT_S)
    found = samples(merged)
    assert_batches_shown(found)  # one sample per series: each one would be counted twice otherwise
    assert by_label(found, "poc_face_batch_rows_total", "station") == ROWS
    assert all("station" not in labels for name, labels, _ in found if name != "poc_face_batch_rows_total")
    batches = [f for f in parse_openmetrics(openmetrics) if f.name == "poc_face_batches"]  # refuses repeats
    assert len(batches) == 1
    assert samples(own) == []  # a station's own registry holds its series only


async def test_without_a_musetalk_model_the_series_are_absent():
    # the warp engine has no batcher: nothing to show, in either mode
    assert samples(await scrape_single_stream(loaded())) == []
    async with stations_port("north", batchers=loaded()) as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            text = (await http.get("/metrics")).text
    assert samples(text) == [] and 'poc_frames_total{station="north"}' in text
