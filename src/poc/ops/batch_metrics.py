"""/metrics for the MuseTalk batcher all stations share: process-wide series, read at scrape time.

Every MuseTalk station of the process renders through the batcher of its loaded model
(poc.face.musetalk.batcher), which already counts what it runs (BatchCounters). A custom
collector reads those counters when Prometheus scrapes, so the batcher's thread does nothing
more per batch for metrics, and a scrape holds its lock only for one copy of the counters.

Series (absent while no batcher runs: the warp engine has none, and a released model's go):

- poc_face_batches_total{shape}: model runs (UNet + VAE) by the padded batch size they ran at;
  a shape warm-up did not run would be a kernel tuned on air.
- poc_face_batch_rows_total{station}: real rows (voiced frames) computed; per station with many
  stations, one unlabelled series for a single stream.
- poc_face_padded_rows_total: rows computed only to fill a shape (the price of fixed shapes).
- poc_face_failed_batches_total: batches that raised (their rows showed the idle face).
- poc_face_batch_stations: histogram of how many stations' rows a batch held (above 1: shared).

They are the process's, so they are served once: by the single stream's /metrics, or by the
stations' merged /metrics without a station label (never inside a station's own registry).
With several models loaded (stations on different devices or dtypes) the batchers' counts are
summed. A model released when its last station stops takes its counts with it; the next one
starts from zero, which Prometheus's rate() reads as a counter reset.
"""

from __future__ import annotations

from collections import Counter as Tally
from typing import Callable, Hashable, Iterable, Iterator, Mapping, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from poc.face.musetalk.batcher import BatchCounters, CrossStationBatcher

STATION_LABEL = "station"  # as poc.ops.station_metrics labels the stations' own series
# A batch holds rows of at most as many stations as its size (8-16 on a GPU).
STATIONS_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16)

K = TypeVar("K", bound=Hashable)


class BatchesCollector:
    """prometheus-client collector over the live batchers' counters (see the module docstring).
    per_station: label real rows by station (the stations' /metrics) or sum them (one stream)."""

    def __init__(self, per_station: bool, source: "BatcherSource") -> None:
        self.per_station = per_station
        self.source = source

    def describe(self) -> list[Metric]:
        # Names only, so that registering this twice on one registry fails at once.
        return list(_families(BatchCounters(), self.per_station))

    def collect(self) -> Iterator[Metric]:
        counters = [batcher.counters() for batcher in self.source()]
        if counters:
            yield from _families(_summed(counters), self.per_station)


BatcherSource = Callable[[], Iterable[CrossStationBatcher]]


def loaded_models_batchers() -> list[CrossStationBatcher]:
    """The batchers of the MuseTalk models this process has loaded (poc.face.musetalk.shared)."""
    from poc.face.musetalk.shared import SHARED_MODELS

    return SHARED_MODELS.batchers()


def export_batches(
    registry: CollectorRegistry, per_station: bool = False, source: BatcherSource = loaded_models_batchers
) -> None:
    """Serve the process's batcher series from `registry` (one registry per process: see above).
    `source` lists the batchers to read at each scrape (tests hand in their own)."""
    registry.register(BatchesCollector(per_station, source))


def _families(counters: BatchCounters, per_station: bool) -> Iterator[Metric]:
    batches = CounterMetricFamily(
        "poc_face_batches", "MuseTalk model runs by padded batch size (shape)", labels=["shape"]
    )
    for shape, runs in sorted(counters.shapes.items()):
        batches.add_metric([str(shape)], runs)
    yield batches
    labels = [STATION_LABEL] if per_station else []
    rows = CounterMetricFamily("poc_face_batch_rows", "Real rows (voiced frames) MuseTalk computed", labels=labels)
    if per_station:
        for station, count in sorted(counters.rows.items()):
            rows.add_metric([station], count)
    else:
        rows.add_metric([], sum(counters.rows.values()))
    yield rows
    yield CounterMetricFamily(
        "poc_face_padded_rows", "Rows MuseTalk computed only to fill a batch shape", value=counters.padded_rows
    )
    yield CounterMetricFamily(
        "poc_face_failed_batches", "MuseTalk batches that raised", value=counters.failed_batches
    )
    held = counters.stations_per_batch
    cumulative = [(str(bound), sum(n for k, n in held.items() if k <= bound)) for bound in STATIONS_BUCKETS]
    yield HistogramMetricFamily(
        "poc_face_batch_stations",
        "Stations whose rows a MuseTalk batch held",
        buckets=[*cumulative, ("+Inf", sum(held.values()))],
        sum_value=sum(k * n for k, n in held.items()),
    )


def _summed(counters: list[BatchCounters]) -> BatchCounters:
    """One model's counters as they are; several models' added up (the module docstring)."""
    if len(counters) == 1:
        return counters[0]
    return BatchCounters(
        failed_batches=sum(c.failed_batches for c in counters),
        padded_rows=sum(c.padded_rows for c in counters),
        shapes=_added(c.shapes for c in counters),
        rows=_added(c.rows for c in counters),
        stations_per_batch=_added(c.stations_per_batch for c in counters),
    )


def _added(counts: Iterable[Mapping[K, int]]) -> dict[K, int]:
    total: Tally[K] = Tally()
    for each in counts:
        total.update(each)
    return dict(total)
