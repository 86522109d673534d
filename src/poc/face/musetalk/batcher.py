"""One queue for the expensive part of MuseTalk (UNet step + VAE decode), shared by every station
that uses the same model: rows from all of them go through the model together, earliest
deadline first, up to the batch size.

Each station's utterance, on its own worker thread, submits the rows it has ready (one per voiced
frame) with each row's deadline and blocks until its rows come back (taking each batch's share as
it arrives, to blend it while the rest run). One thread per batcher, the runner, takes the pending
rows of all stations with the earliest deadlines (up to the batch size), runs them as one batch,
hands each submitter its rows, and goes on while rows wait.

Why a dedicated runner rather than letting whichever submitting thread finds the model idle run
the batch (a "leader"): on CUDA the first batch a thread runs costs seconds: each thread gets its
own cuDNN/cuBLAS handles, and with cudnn.benchmark (which load_model turns on) its own cache of
tuned kernels. Measured on an H200 with the full-size network in float16, batch 8: 60 ms warm,
2.5-3.3 s in a thread new to it (0.5-0.8 s with benchmark off). Station work runs on anyio's
worker threads, which retire after 10 s idle, so a leader would keep paying it; the runner pays
once per batch shape for the life of the model. A hand-off costs microseconds. The runner starts
with the batcher (when the model loads) and stops at close() (when the last engine lets go of
the model), after serving what is queued; it only ever waits for rows, so dropping an utterance
still leaves nothing running on its behalf beyond the rows already submitted.

A station alone gets the same batches as without sharing: its rows, in order, at most its batch
size at a time. Rows are independent through the UNet and the VAE (the batch dimension), so
which rows share a batch changes a face only by the rounding of the kernels chosen for that
batch size (tests/face/musetalk/test_batching.py).

Fixed shapes: every batch runs padded up to one of a few sizes, batch_shapes(limit): the powers
of two below the batch limit, and the limit itself (1, 2, 4, 8, 12 for 12). Pad rows are copies
of the batch's last row and their outputs are dropped. Why: with cudnn.benchmark on (load_model
turns it on for CUDA), the first batch of each new size tunes its kernels, 2.4-2.8 s on an H200
against 40-90 ms warm; ready rows come in any count (1, 3, 5, 7... as audio arrives), so without
padding a stream would stall on each new count mid-speech. With a fixed set, warm-up runs each
shape once on this thread and nothing is tuned on air. The price: rows computed only to fill a
shape, under 2x the real rows (a batch of 5 runs as 8). Copies rather than zeros so that a pad
row can never be the one that overflows in float16 and fails the real rows' batch; rows are
independent through the UNet and the VAE, so pads do not change a real row's output beyond the
kernel rounding that any batch size brings (tests/face/musetalk/test_shapes.py). The counters
record each model run's shape, so a test or a status page can see that none ran unwarmed.

Overlap (two batches deep): given Stages (render.ModelStages), the runner launches batch n+1 (its
UNet, VAE decode, uint8 conversion and an asynchronous copy into pinned host memory are queued on
the device, and launch returns at once) before it waits for batch n and delivers it. So the GPU
renders n+1 while the host waits out n's copy, hands n's rows back and cuts the next batch, and
each submitter blends n's faces on its own thread (Seat.submit's on_batch) while n+1 is still on
the device. Without this the GPU idles through every copy, every hand-off and every Python launch
of the next batch's few hundred kernels. Two deep is enough: the device always has the next
batch queued, and more would only add latency (rows for batch n+2 would be chosen before n+1's
deadlines are known) and pinned buffers. A batch already finished when the next is ready to go is
delivered first, so a model that computes at launch (the CPU, a plain function) runs exactly as
before: one batch at a time, each delivered as soon as it is done. Which rows go into batch n+1
is decided before batch n is delivered; earliest-deadline order holds among the rows waiting
then. A warming submission runs one deep: what is in flight is delivered first, and it is
collected before anything else is launched.

Faults: a batch that raises, at launch or at collect (a NaN is found there, with the copy),
fails only its rows. When it held rows of more than one submission, each submission's rows are
run again on their own first (one deep: this is the rare path), so one station's bad rows
(float16 overflow, say) or a mixed batch too large for memory never blanks another station's
faces. A runner that dies fails every row queued or in flight.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Protocol, Sequence, TypeVar, runtime_checkable

import attrs

RECENT_BATCHES = 256  # batches kept in BatchCounters.recent (enough for tests and a status page)
DEPTH = 2  # batches in flight at most: one on the device, one being queued behind it


@runtime_checkable
class Stages(Protocol):
    """A model whose batch is started and finished apart: launch(rows) queues the work and
    returns at once with a handle, ready(handle) says whether collect(handle) would return
    without waiting, and collect(handle) gives one output per row (or raises the batch's
    error). A model that computes on the calling thread launches everything and is always
    ready."""

    def launch(self, rows: list[Any]) -> Any: ...

    def ready(self, launched: Any) -> bool: ...

    def collect(self, launched: Any) -> Sequence[Any]: ...


@attrs.frozen
class AtOnce:
    """A plain function as Stages: launch does all the work, so every batch is ready at once
    (and the runner delivers it before starting the next: no pipelining, no added wait)."""

    run: Callable[[list[Any]], Sequence[Any]]

    def launch(self, rows: list[Any]) -> Sequence[Any]:
        return self.run(rows)

    def ready(self, launched: Any) -> bool:
        return True

    def collect(self, launched: Sequence[Any]) -> Sequence[Any]:
        return launched


class Ranked(Protocol):
    """What earliest_first orders by."""

    @property
    def deadline(self) -> float: ...

    @property
    def arrival(self) -> int: ...  # submission order

    @property
    def position(self) -> int: ...  # row within its submission


R = TypeVar("R", bound=Ranked)


def batch_shapes(limit: int) -> tuple[int, ...]:
    """The batch sizes run under this batch limit: the powers of two below it, then the limit."""
    if limit < 1:
        raise ValueError(f"batch limit must be at least 1, got {limit}")
    shapes = [1 << k for k in range((limit - 1).bit_length()) if 1 << k < limit]
    return (*shapes, limit)


def padded_size(rows: int, limit: int | None) -> int:
    """The shape a batch of `rows` runs as: the smallest of batch_shapes(limit) that holds it;
    with no limit, or more rows than it (a warming submission larger than the limit), the next
    power of two."""
    if rows < 1:
        raise ValueError(f"a batch holds at least 1 row, got {rows}")
    if limit is not None and rows <= limit:
        return next(shape for shape in batch_shapes(limit) if shape >= rows)
    return 1 << (rows - 1).bit_length()


def earliest_first(pending: Sequence[R], limit: int | None) -> tuple[list[R], list[R]]:
    """(the next batch, what stays pending): rows by deadline, ties to the earlier submission,
    then a submission's own order; at most `limit` rows (None: all)."""
    ordered = sorted(pending, key=lambda row: (row.deadline, row.arrival, row.position))
    if limit is None:
        return ordered, []
    return ordered[:limit], ordered[limit:]


@attrs.frozen
class BatchFailed:
    """Stands in for the output of a row whose batch raised."""

    error: Exception


@attrs.define
class BatchCounters:
    """What the batcher has done (a copy: read it freely).

    recent: the last batches, each as ((station, rows), ...) in order of first appearance.
    shapes: model runs per batch size actually run (padded: see batch_shapes); a failed mixed
    batch's per-station re-runs count as runs of their own.
    padded_rows: rows computed only to fill a shape (their outputs are dropped).
    stations_per_batch: batches by how many stations' rows they held (for /metrics' histogram).
    """

    batches: int = 0
    failed_batches: int = 0
    mixed_batches: int = 0  # batches holding rows of more than one station
    rows: dict[str, int] = attrs.field(factory=dict)
    batches_with: dict[str, int] = attrs.field(factory=dict)  # batches holding rows of each station
    recent: deque[tuple[tuple[str, int], ...]] = attrs.field(factory=lambda: deque(maxlen=RECENT_BATCHES))
    shapes: dict[int, int] = attrs.field(factory=dict)
    padded_rows: int = 0
    stations_per_batch: dict[int, int] = attrs.field(factory=dict)

    def record(self, stations: tuple[tuple[str, int], ...], failed: bool) -> None:
        self.batches += 1
        self.failed_batches += failed
        self.mixed_batches += len(stations) > 1
        self.stations_per_batch[len(stations)] = self.stations_per_batch.get(len(stations), 0) + 1
        for station, rows in stations:
            self.rows[station] = self.rows.get(station, 0) + rows
            self.batches_with[station] = self.batches_with.get(station, 0) + 1
        self.recent.append(stations)

    def record_run(self, shape: int, rows: int) -> None:
        self.shapes[shape] = self.shapes.get(shape, 0) + 1
        self.padded_rows += shape - rows

    def copy(self) -> "BatchCounters":
        recent = deque(self.recent, maxlen=RECENT_BATCHES)
        return attrs.evolve(
            self,
            rows=dict(self.rows),
            batches_with=dict(self.batches_with),
            recent=recent,
            shapes=dict(self.shapes),
            stations_per_batch=dict(self.stations_per_batch),
        )


class _Ticket:
    """One submission: its outputs fill in as the batches holding its rows finish."""

    def __init__(self, seat: "Seat", size: int) -> None:
        self.seat = seat
        self.outputs: list[Any] = [None] * size
        self.left = size
        self.arrived: list[tuple[list[int], list[Any]]] = []  # (positions, outputs) not yet seen by the submitter

    @property
    def done(self) -> bool:
        return self.left == 0


@attrs.frozen
class _Row:
    deadline: float
    arrival: int
    position: int
    ticket: _Ticket = attrs.field(eq=False)
    payload: Any = attrs.field(eq=False)


OnBatch = Callable[[list[int], list[Any]], None]


@attrs.frozen
class _InFlight:
    """A launched batch: its rows, the limit it was cut under, and the handle of its launch
    (or the error the launch raised, reported when the batch is finished)."""

    rows: list[_Row]
    limit: int | None
    launched: tuple[Any, int] | None = None  # (handle, shape) from _launched
    error: Exception | None = None


@attrs.define(eq=False)
class Seat:
    """A station's place at a batcher: its name (for the counters) and its batch size."""

    station: str
    batch_size: int | None  # None: no limit of its own
    _batcher: "CrossStationBatcher | None"
    warming_up: bool = False  # set by warming()

    @contextmanager
    def warming(self) -> Iterator["Seat"]:
        """Within this block the seat warms up: each submission runs as one batch of its own
        (not cut, not joined by other stations' rows, ahead of queued rows, padded to this seat's
        own shapes), so each shape warm-up asks for is the shape that runs on the runner. And
        its batch size does not count toward the batch limit until the block ends, so other
        stations' batches never run at a size it has not tuned yet. Not for streaming."""
        self.warming_up = True
        try:
            yield self
        finally:
            self.warming_up = False

    def submit(
        self, rows: Sequence[Any], deadlines: Sequence[float], on_batch: "OnBatch | None" = None
    ) -> list[Any]:
        """Run these rows (deadline each) through the model; blocks. Returns one output per row,
        in order, or BatchFailed for a row whose batch raised.

        on_batch(positions, outputs), when given, is called on this thread for each batch's
        share of the rows as it comes back (positions within `rows`), before the next one is
        waited for: the caller can work on a batch (blend its faces) while the device runs
        the next."""
        if self._batcher is None:
            raise RuntimeError(f"station {self.station!r} has left the batcher")
        return self._batcher.submit(self, rows, deadlines, on_batch)

    def leave(self) -> None:
        """This station renders no more: its batch size stops counting, and the seat lets go of
        the batcher (and so of the model). Idempotent."""
        batcher, self._batcher = self._batcher, None
        if batcher is not None:
            batcher.leave(self)


class CrossStationBatcher:
    """Batches rows from every seat through `run` on its own thread, which starts now and
    stops at close(). `run` is either a function (rows in, one output per row out) or Stages,
    which the runner keeps up to DEPTH batches deep.

    The batch size is the largest of the seated stations' batch sizes (leaving out stations
    still warming up): a station warmed up at that size proved it fits, and a station alone
    gets exactly its own. Each batch runs padded to its shape (padded_size).
    """

    def __init__(self, run: Callable[[list[Any]], Sequence[Any]] | Stages, name: str = "musetalk-batches") -> None:
        self._stages: Stages = run if isinstance(run, Stages) else AtOnce(run)
        self._cond = threading.Condition()
        self._pending: list[_Row] = []
        self._warming: deque[list[_Row]] = deque()  # submissions of warming seats: one batch each, in order
        self._seats: list[Seat] = []
        self._closed = False
        self._arrivals = itertools.count()
        self._counters = BatchCounters()
        self._runner = threading.Thread(target=self._serve, name=name, daemon=True)
        self._runner.start()

    def join(self, station: str, batch_size: int | None) -> Seat:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        seat = Seat(station, batch_size, self)
        with self._cond:
            self._seats.append(seat)
        return seat

    def leave(self, seat: Seat) -> None:
        with self._cond:
            if seat in self._seats:
                self._seats.remove(seat)

    def counters(self) -> BatchCounters:
        with self._cond:
            return self._counters.copy()

    def waiting(self) -> dict[str, int]:
        """Rows waiting for a batch now, per station (the batch running is not counted)."""
        with self._cond:
            return dict(_stations(self._pending + [row for rows in self._warming for row in rows]))

    @property
    def closed(self) -> bool:
        """Closed (its model released) or its runner stopped: it takes no more rows."""
        return self._closed

    @property
    def runner(self) -> threading.Thread:
        """The thread the batches run on."""
        return self._runner

    def submit(
        self, seat: Seat, rows: Sequence[Any], deadlines: Sequence[float], on_batch: OnBatch | None = None
    ) -> list[Any]:
        if len(rows) != len(deadlines):
            raise ValueError(f"{len(rows)} rows but {len(deadlines)} deadlines")
        if not rows:
            return []
        ticket = _Ticket(seat, len(rows))
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed (its model was released)")
            arrival = next(self._arrivals)
            queued = [_Row(float(d), arrival, i, ticket, row) for i, (row, d) in enumerate(zip(rows, deadlines))]
            if seat.warming_up:
                self._warming.append(queued)
            else:
                self._pending += queued
            self._cond.notify_all()
        while True:
            with self._cond:
                while not ticket.arrived and not ticket.done:
                    self._cond.wait()
                arrived, ticket.arrived = ticket.arrived, []
                last = ticket.done
            if on_batch is not None:  # outside the lock: the runner goes on meanwhile
                for positions, outputs in arrived:
                    on_batch(positions, outputs)
            if last:
                return ticket.outputs

    def close(self, timeout: float | None = 60.0) -> bool:
        """Stop the runner once the rows already queued are served; True when it has stopped
        within `timeout` (a batch still running on a hung device would not let it)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._runner:
            self._runner.join(timeout)
        return not self._runner.is_alive()

    def _limit(self) -> int | None:
        seated = [s.batch_size for s in self._seats if not s.warming_up]
        sizes = seated + [r.ticket.seat.batch_size for r in self._pending]
        return None if not sizes or None in sizes else max(s for s in sizes if s is not None)

    def _serve(self) -> None:
        """The runner: batches while rows wait, until closed and drained. Up to DEPTH batches
        are in flight: batch n+1 is launched before batch n is collected, so the device works
        on n+1 while n is copied to the host and delivered (see the module docstring). A batch
        already finished is delivered before the next is launched, so a model that is always
        ready (a function, the CPU) runs one batch at a time, as before pipelining. Model
        errors are delivered as BatchFailed (_outputs); should anything else end the loop, the
        batcher closes and every row still queued or in flight fails, so no submitter waits
        forever."""
        in_flight: deque[_InFlight] = deque()
        batch: list[_Row] | None = None
        try:
            while True:
                while in_flight and self._ready(in_flight[0]):
                    self._finish_oldest(in_flight)
                taken = self._next_batch(wait=not in_flight)
                if taken is None:
                    if not in_flight:
                        return  # closed and drained
                    self._finish_oldest(in_flight)  # nothing to queue behind it: wait for it
                    continue
                batch, limit, warming = taken
                if warming:  # a warming submission runs alone, its shape tuned with nothing else queued
                    while in_flight:
                        self._finish_oldest(in_flight)
                in_flight.append(self._launch(batch, limit))
                batch = None
                while len(in_flight) >= (1 if warming else DEPTH):
                    self._finish_oldest(in_flight)
        finally:
            with self._cond:
                self._closed = True
                flying = [row for entry in in_flight for row in entry.rows]
                left = flying + (batch or []) + [row for rows in self._warming for row in rows] + self._pending
                self._pending = []
                self._warming.clear()
            if left:
                self._deliver(left, [BatchFailed(RuntimeError("the batcher stopped"))] * len(left), record=False)

    def _next_batch(self, wait: bool) -> tuple[list[_Row], int | None, bool] | None:
        """(rows, the limit they were cut under, whether a warming submission) for the next
        batch; None when closed and drained, or (wait False) when no row waits."""
        with self._cond:
            while wait and not self._pending and not self._warming and not self._closed:
                self._cond.wait()
            if self._warming:
                batch = self._warming.popleft()
                return batch, batch[0].ticket.seat.batch_size, True
            if not self._pending:
                return None
            # the limit is taken with the batch: seats coming and going change it between batches
            limit = self._limit()
            batch, self._pending = earliest_first(self._pending, limit)
            return batch, limit, False

    def _launch(self, batch: list[_Row], limit: int | None) -> _InFlight:
        try:
            return _InFlight(batch, limit, launched=self._launched([row.payload for row in batch], limit))
        except Exception as error:  # reported when the batch is finished, in its turn
            return _InFlight(batch, limit, error=error)

    def _ready(self, entry: _InFlight) -> bool:
        return entry.launched is None or self._stages.ready(entry.launched[0])

    def _finish_oldest(self, in_flight: deque[_InFlight]) -> None:
        """Collect and deliver the oldest batch in flight; it leaves the queue only once
        delivered, so should collecting it end the runner, its rows fail with the rest."""
        self._deliver(in_flight[0].rows, self._outputs(in_flight[0]))
        in_flight.popleft()

    def _deliver(self, batch: list[_Row], outputs: list[Any], record: bool = True) -> None:
        with self._cond:
            shares: dict[int, tuple[_Ticket, list[int], list[Any]]] = {}
            for row, output in zip(batch, outputs):
                row.ticket.outputs[row.position] = output
                row.ticket.left -= 1
                share = shares.setdefault(id(row.ticket), (row.ticket, [], []))
                share[1].append(row.position)
                share[2].append(output)
            for ticket, positions, got in shares.values():
                ticket.arrived.append((positions, got))
            if record:
                self._counters.record(_stations(batch), failed=any(isinstance(o, BatchFailed) for o in outputs))
            self._cond.notify_all()

    def _outputs(self, entry: _InFlight) -> list[Any]:
        batch = entry.rows
        try:
            if entry.launched is None:
                raise entry.error or RuntimeError("the batch was not launched")
            return self._collected(entry.launched, len(batch))
        except Exception as error:
            failure = error
        tickets = {id(row.ticket): row.ticket for row in batch}
        if len(tickets) == 1:
            return [BatchFailed(failure)] * len(batch)
        # rows of several submissions: run each one's rows alone (one at a time, not
        # pipelined: this is the rare path), so only the faulty ones fail
        outputs: list[Any] = [None] * len(batch)
        for ticket in tickets.values():
            mine = [k for k, row in enumerate(batch) if row.ticket is ticket]
            try:
                launched = self._launched([batch[k].payload for k in mine], entry.limit)
                got: Sequence[Any] = self._collected(launched, len(mine))
            except Exception as error:
                got = [BatchFailed(error)] * len(mine)
            for k, output in zip(mine, got):
                outputs[k] = output
        return outputs

    def _launched(self, payloads: list[Any], limit: int | None) -> tuple[Any, int]:
        """Launch the rows padded to their shape: (the launch's handle, the shape), for
        _collected."""
        shape = padded_size(len(payloads), limit)
        padded = payloads + [payloads[-1]] * (shape - len(payloads))
        try:
            return self._stages.launch(padded), shape
        finally:  # a launch that raised was still tried at this shape (and tuned for it)
            with self._cond:
                self._counters.record_run(shape, len(payloads))

    def _collected(self, launched: tuple[Any, int], rows: int) -> list[Any]:
        """The outputs of the real rows of a launched batch; the pads' are dropped."""
        handle, shape = launched
        outputs = list(self._stages.collect(handle))
        if len(outputs) != shape:
            raise RuntimeError(f"the model gave {len(outputs)} outputs for {shape} rows")
        return outputs[:rows]


def _stations(batch: Sequence[_Row]) -> tuple[tuple[str, int], ...]:
    counts: dict[str, int] = {}
    for row in batch:
        counts[row.ticket.seat.station] = counts.get(row.ticket.seat.station, 0) + 1
    return tuple(counts.items())
