"""One queue for the expensive part of MuseTalk (UNet step + VAE decode), shared by every station
that uses the same model: rows from all of them go through the model together, earliest
deadline first, up to the batch size.

Each station's utterance, on its own worker thread, submits the rows it has ready (one per voiced
frame) with each row's deadline and blocks until its rows come back. One thread per batcher, the
runner, takes the pending rows of all stations with the earliest deadlines (up to the batch
size), runs them as one batch, hands each submitter its rows, and goes on while rows wait.

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

Faults: a batch that raises fails only its rows. When it held rows of more than one submission,
each submission's rows are run again on their own first, so one station's bad rows (float16
overflow, say) or a mixed batch too large for memory never blanks another station's faces.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from typing import Any, Callable, Protocol, Sequence, TypeVar

import attrs

RECENT_BATCHES = 256  # batches kept in BatchCounters.recent (enough for tests and a status page)


class Ranked(Protocol):
    """What earliest_first orders by."""

    @property
    def deadline(self) -> float: ...

    @property
    def arrival(self) -> int: ...  # submission order

    @property
    def position(self) -> int: ...  # row within its submission


R = TypeVar("R", bound=Ranked)


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
    """

    batches: int = 0
    failed_batches: int = 0
    mixed_batches: int = 0  # batches holding rows of more than one station
    rows: dict[str, int] = attrs.field(factory=dict)
    batches_with: dict[str, int] = attrs.field(factory=dict)  # batches holding rows of each station
    recent: deque[tuple[tuple[str, int], ...]] = attrs.field(factory=lambda: deque(maxlen=RECENT_BATCHES))

    def record(self, stations: tuple[tuple[str, int], ...], failed: bool) -> None:
        self.batches += 1
        self.failed_batches += failed
        self.mixed_batches += len(stations) > 1
        for station, rows in stations:
            self.rows[station] = self.rows.get(station, 0) + rows
            self.batches_with[station] = self.batches_with.get(station, 0) + 1
        self.recent.append(stations)

    def copy(self) -> "BatchCounters":
        recent = deque(self.recent, maxlen=RECENT_BATCHES)
        return attrs.evolve(self, rows=dict(self.rows), batches_with=dict(self.batches_with), recent=recent)


class _Ticket:
    """One submission: its outputs fill in as the batches holding its rows finish."""

    def __init__(self, seat: "Seat", size: int) -> None:
        self.seat = seat
        self.outputs: list[Any] = [None] * size
        self.left = size

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


@attrs.define(eq=False)
class Seat:
    """A station's place at a batcher: its name (for the counters) and its batch size."""

    station: str
    batch_size: int | None  # None: no limit of its own
    _batcher: "CrossStationBatcher | None"

    def submit(self, rows: Sequence[Any], deadlines: Sequence[float]) -> list[Any]:
        """Run these rows (deadline each) through the model; blocks. Returns one output per row,
        in order, or BatchFailed for a row whose batch raised."""
        if self._batcher is None:
            raise RuntimeError(f"station {self.station!r} has left the batcher")
        return self._batcher.submit(self, rows, deadlines)

    def leave(self) -> None:
        """This station renders no more: its batch size stops counting, and the seat lets go of
        the batcher (and so of the model). Idempotent."""
        batcher, self._batcher = self._batcher, None
        if batcher is not None:
            batcher.leave(self)


class CrossStationBatcher:
    """Batches rows from every seat through `run` (rows in, one output per row out) on its own
    thread, which starts now and stops at close().

    The batch size is the largest of the seated stations' batch sizes: a station warmed up at
    that size proved it fits, and a station alone gets exactly its own.
    """

    def __init__(self, run: Callable[[list[Any]], Sequence[Any]], name: str = "musetalk-batches") -> None:
        self._run = run
        self._cond = threading.Condition()
        self._pending: list[_Row] = []
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
            return dict(_stations(self._pending))

    @property
    def runner(self) -> threading.Thread:
        """The thread the batches run on."""
        return self._runner

    def submit(self, seat: Seat, rows: Sequence[Any], deadlines: Sequence[float]) -> list[Any]:
        if len(rows) != len(deadlines):
            raise ValueError(f"{len(rows)} rows but {len(deadlines)} deadlines")
        if not rows:
            return []
        ticket = _Ticket(seat, len(rows))
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed (its model was released)")
            arrival = next(self._arrivals)
            self._pending += [_Row(float(d), arrival, i, ticket, row) for i, (row, d) in enumerate(zip(rows, deadlines))]
            self._cond.notify_all()
            while not ticket.done:
                self._cond.wait()
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
        sizes = [s.batch_size for s in self._seats] + [r.ticket.seat.batch_size for r in self._pending]
        return None if not sizes or None in sizes else max(s for s in sizes if s is not None)

    def _serve(self) -> None:
        """The runner: batches while rows wait, until closed and drained. Model errors are
        delivered as BatchFailed (_outputs); should anything else end the loop, the batcher
        closes and every row still queued fails, so no submitter waits forever."""
        batch: list[_Row] | None = None
        try:
            while (batch := self._next_batch()) is not None:
                self._deliver(batch, self._outputs(batch))
                batch = None
        finally:
            with self._cond:
                self._closed = True
                left, self._pending = (batch or []) + self._pending, []
            if left:
                self._deliver(left, [BatchFailed(RuntimeError("the batcher stopped"))] * len(left), record=False)

    def _next_batch(self) -> list[_Row] | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if not self._pending:
                return None
            batch, self._pending = earliest_first(self._pending, self._limit())
            return batch

    def _deliver(self, batch: list[_Row], outputs: list[Any], record: bool = True) -> None:
        with self._cond:
            for row, output in zip(batch, outputs):
                row.ticket.outputs[row.position] = output
                row.ticket.left -= 1
            if record:
                self._counters.record(_stations(batch), failed=any(isinstance(o, BatchFailed) for o in outputs))
            self._cond.notify_all()

    def _outputs(self, batch: list[_Row]) -> list[Any]:
        try:
            return self._checked([row.payload for row in batch])
        except Exception as error:
            failure = error
        tickets = {id(row.ticket): row.ticket for row in batch}
        if len(tickets) == 1:
            return [BatchFailed(failure)] * len(batch)
        # rows of several submissions: run each one's rows alone, so only the faulty ones fail
        outputs: list[Any] = [None] * len(batch)
        for ticket in tickets.values():
            mine = [k for k, row in enumerate(batch) if row.ticket is ticket]
            try:
                got: Sequence[Any] = self._checked([batch[k].payload for k in mine])
            except Exception as error:
                got = [BatchFailed(error)] * len(mine)
            for k, output in zip(mine, got):
                outputs[k] = output
        return outputs

    def _checked(self, payloads: list[Any]) -> list[Any]:
        outputs = list(self._run(payloads))
        if len(outputs) != len(payloads):
            raise RuntimeError(f"the model gave {len(outputs)} outputs for {len(payloads)} rows")
        return outputs


def _stations(batch: Sequence[_Row]) -> tuple[tuple[str, int], ...]:
    counts: dict[str, int] = {}
    for row in batch:
        counts[row.ticket.seat.station] = counts.get(row.ticket.seat.station, 0) + 1
    return tuple(counts.items())
