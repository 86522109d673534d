"""/metrics for many stations: every station's series in one exposition, told apart by a
`station` label.

Each station keeps its own registry (poc.metrics.Metrics), so one station's numbers never mix
with another's. A scrape merges them: the families of one name (every station has
poc_frames_total) become one family whose samples each carry station="NAME", because both
exposition formats want a family's HELP and TYPE once (OpenMetrics refuses a repeated family).
Types, `_created` samples and histogram buckets come through as each registry has them.

The process's own series (the shared MuseTalk batcher's, ops/batch_metrics.py) come once, next
to the stations' families, not inside any station's registry.

As for one station (ops/health.py), each station's moment gauges are set from a fresh snapshot
just before its registry is read. A station whose snapshot fails (a bug) keeps its last moment
gauges and is logged; the other stations are still served.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator, Mapping, Protocol

from prometheus_client import CollectorRegistry, make_asgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from starlette.types import Receive, Scope, Send

from poc.metrics import Metrics
from poc.ops.batch_metrics import BatcherSource, export_batches, loaded_models_batchers
from poc.ops.health import set_moment_gauges
from poc.ops.status import StatusSource

log = logging.getLogger(__name__)

STATION_LABEL = "station"
STATIONS_GAUGE = "poc_stations"


class MeteredStation(Protocol):
    """What a scrape reads from a station (poc.ops.stations_http.StationView has it)."""

    @property
    def metrics(self) -> Metrics: ...

    @property
    def status(self) -> StatusSource: ...


class StationsCollector:
    """prometheus-client collector over the stations current at each scrape (`stations()` is
    asked every time, so stations added or removed at run time show up or vanish). Collected
    on the event loop: make_asgi_app reads registries there, and `status` must be called there."""

    def __init__(self, stations: Callable[[], Mapping[str, MeteredStation]]) -> None:
        self.stations = stations

    def collect(self) -> Iterator[Metric]:
        current = self.stations()
        yield GaugeMetricFamily(STATIONS_GAUGE, "Stations this process runs", value=len(current))
        merged: dict[str, Metric] = {}
        for name, station in sorted(current.items()):
            _refresh(name, station)
            for family in station.metrics.registry.collect():
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                into.samples += [s._replace(labels={**s.labels, STATION_LABEL: name}) for s in family.samples]
        yield from merged.values()


def _refresh(name: str, station: MeteredStation) -> None:
    try:
        now = station.status()
    except Exception as error:  # one station's bug must not take the others' numbers away
        log.error("metrics: station %s: its status failed (%s: %s); its moment gauges are stale",
                  name, type(error).__name__, error)  # fmt: skip
        return
    set_moment_gauges(station.metrics, now)


class StationsMetricsApp:
    """GET /metrics for many stations: prometheus-client's ASGI app (content negotiation, gzip,
    OpenMetrics) over a registry holding one StationsCollector and the process's batcher series.
    A class (not the function make_asgi_app returns), so that Starlette routes to it as an ASGI
    app, not as an endpoint."""

    def __init__(
        self, stations: Callable[[], Mapping[str, MeteredStation]], batchers: BatcherSource = loaded_models_batchers
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StationsCollector(stations))
        export_batches(self.registry, per_station=True, source=batchers)
        self.app = make_asgi_app(self.registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
