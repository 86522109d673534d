"""The cross-station batcher's promises, with a stand-in model (a plain function over numbers) so
they run in milliseconds and without torch: earliest deadlines first, each submitter gets its own
rows back, a station alone gets exactly its own batches, one station's fault fails only its rows,
all batches run on the batcher's one thread, closing serves what is queued, and frames of
different stations rank by when they are due, not by their counters."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator

import attrs
import pytest

from poc.face.musetalk.batcher import BatchFailed, CrossStationBatcher, Seat, earliest_first
from poc.face.musetalk.deadlines import StationClock

WAIT_S = 10.0  # upper bound for anything a test waits on; the tests themselves take milliseconds


@pytest.fixture
def batchers() -> Iterator[Callable[..., CrossStationBatcher]]:
    """Makes batchers and closes them (stopping their threads) after the test."""
    made: list[CrossStationBatcher] = []

    def make(run: Callable[[list[Any]], Any]) -> CrossStationBatcher:
        made.append(CrossStationBatcher(run))
        return made[-1]

    yield make
    for batcher in made:
        assert batcher.close(WAIT_S)


@attrs.frozen
class Row:
    deadline: float
    arrival: int
    position: int
    name: str


def test_the_earliest_deadlines_go_first_up_to_the_limit() -> None:
    pending = [
        Row(5.0, 0, 0, "a0"), Row(6.0, 0, 1, "a1"), Row(7.0, 0, 2, "a1"),
        Row(1.0, 1, 0, "b0"), Row(5.0, 1, 1, "b1"),
        Row(0.5, 2, 0, "c0"),
    ]  # fmt: skip
    batch, rest = earliest_first(pending, 3)
    assert [r.name for r in batch] == ["c0", "b0", "a0"]  # a0 and b1 tie at 5.0: the earlier submission wins
    assert [r.name for r in rest] == ["b1", "a1", "a1"]
    assert [r.position for r in rest] == [1, 1, 2]
    everything, none = earliest_first(pending, None)
    assert len(everything) == 6 and none == []
    assert earliest_first([], 4) == ([], [])


def test_a_later_station_does_not_jump_the_queue_with_its_small_counters() -> None:
    """Two stations put on air an hour apart: the old one's counters are 90 000 higher, yet
    whichever frame is due first in real time ranks first."""
    now = [1000.0]
    old, new = StationClock(25, now=lambda: now[0]), StationClock(25, now=lambda: now[0])
    old.observe(90_000 + 12)  # both fed 12 frames (0.48 s) ahead of what they show now
    new.observe(10 + 12)
    old_frame, new_frame = 90_000 + 20, 10 + 21  # due 0.32 s and 0.36 s from now
    assert old.deadline(old_frame) < new.deadline(new_frame)
    assert new.deadline(new_frame) - old.deadline(old_frame) == pytest.approx(0.04)


def test_the_clock_anchor_is_the_tightest_feed_seen() -> None:
    now = [50.0]
    clock = StationClock(25, now=lambda: now[0])
    assert clock.deadline(7) == 50.0  # never fed (warm-up): due now
    clock.observe(100)  # frame 100 fed at 50.0
    assert clock.deadline(100) == pytest.approx(50.0) and clock.deadline(125) == pytest.approx(51.0)
    now[0] = 51.0
    clock.observe(200)  # a message synthesised 3 s ahead: a looser bound, ignored
    assert clock.deadline(100) == pytest.approx(50.0)
    now[0] = 60.0
    clock.observe(300)  # the clock was re-based 2 s later after a stall: followed
    assert clock.deadline(300) == pytest.approx(60.0)
    with pytest.raises(ValueError):
        StationClock(0)


class Gate:
    """A stand-in model: row -> row * 10, recording each batch; while closed, a batch blocks
    inside the model until the test opens it (so the test knows a batch is running)."""

    def __init__(self, fail_on: Callable[[list[Any]], bool] = lambda rows: False) -> None:
        self.batches: list[list[Any]] = []
        self.open = threading.Event()
        self.running = threading.Event()
        self._fail_on = fail_on

    def __call__(self, rows: list[Any]) -> list[Any]:
        self.batches.append(list(rows))
        self.running.set()
        assert self.open.wait(WAIT_S), "the test never opened the gate"
        if self._fail_on(rows):
            raise RuntimeError(f"cannot run {rows}")
        return [row * 10 for row in rows]


def submit_in_thread(seat: Seat, rows: list[int], deadlines: list[float]) -> tuple[threading.Thread, dict[str, Any]]:
    got: dict[str, Any] = {}

    def go() -> None:
        got["outputs"] = seat.submit(rows, deadlines)

    thread = threading.Thread(target=go)
    thread.start()
    return thread, got


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_rows_of_two_stations_share_a_batch_by_deadline_and_each_gets_its_own_back(batchers: Callable[..., CrossStationBatcher]) -> None:
    gate = Gate()
    batcher = batchers(gate)
    a, b = batcher.join("a", 2), batcher.join("b", 2)
    ta, got_a = submit_in_thread(a, [1, 2, 3], [0.0, 0.04, 0.08])
    gate.running.wait(WAIT_S)  # a runs its first two rows; its third waits
    tb, got_b = submit_in_thread(b, [4, 5], [0.03, 0.05])
    wait_until(lambda: batcher.waiting() == {"a": 1, "b": 2})
    gate.open.set()
    for t in (ta, tb):
        t.join(WAIT_S)
    assert got_a["outputs"] == [10, 20, 30] and got_b["outputs"] == [40, 50]
    assert gate.batches == [[1, 2], [4, 5], [3]]  # 0.03 and 0.05 come before a's 0.08
    counters = batcher.counters()
    assert list(counters.recent) == [(("a", 2),), (("b", 2),), (("a", 1),)]
    assert counters.batches == 3 and counters.rows == {"a": 3, "b": 2} and counters.mixed_batches == 0

    gate.open.clear()
    gate.running.clear()
    ta, got_a = submit_in_thread(a, [6, 7, 8], [1.0, 1.04, 1.08])
    gate.running.wait(WAIT_S)
    tb, got_b = submit_in_thread(b, [9], [1.06])
    wait_until(lambda: batcher.waiting() == {"a": 1, "b": 1})
    gate.open.set()
    for t in (ta, tb):
        t.join(WAIT_S)
    assert got_a["outputs"] == [60, 70, 80] and got_b["outputs"] == [90]
    assert gate.batches[-1] == [9, 8]  # one batch, both stations, by deadline
    assert batcher.counters().recent[-1] == (("b", 1), ("a", 1))
    assert batcher.counters().mixed_batches == 1 and batcher.waiting() == {}


def test_a_station_alone_gets_exactly_its_own_batch_sizes_all_on_the_batchers_thread() -> None:
    threads = threading.active_count()
    seen_threads: set[int | None] = set()

    def model(rows: list[int]) -> list[int]:
        seen_threads.add(threading.get_ident())
        return [r + 1 for r in rows]

    batcher = CrossStationBatcher(model)
    assert threading.active_count() == threads + 1  # its runner
    seat = batcher.join("alone", 3)
    assert seat.submit([1, 2, 3, 4, 5, 6, 7], [float(k) for k in range(7)]) == [2, 3, 4, 5, 6, 7, 8]
    assert [b for b in batcher.counters().recent] == [(("alone", 3),), (("alone", 3),), (("alone", 1),)]
    other, _ = submit_in_thread(seat, [10], [0.0])  # from another station thread: same runner
    other.join(WAIT_S)
    assert seen_threads == {batcher.runner.ident} and batcher.runner.ident != threading.get_ident()
    assert seat.submit([], []) == []
    with pytest.raises(ValueError, match="deadlines"):
        seat.submit([1, 2], [0.0])
    assert batcher.close(WAIT_S) and threading.active_count() == threads


def test_the_batch_limit_is_the_largest_seated_batch_size(batchers: Callable[..., CrossStationBatcher]) -> None:
    batcher = batchers(lambda rows: rows)
    small, big = batcher.join("small", 2), batcher.join("big", 4)
    small.submit(list(range(6)), [0.0] * 6)
    assert batcher.counters().recent[-1] == (("small", 2),)  # 4, then 2
    big.leave()
    big.leave()  # idempotent
    small.submit(list(range(3)), [0.0] * 3)
    assert list(batcher.counters().recent)[-2:] == [(("small", 2),), (("small", 1),)]
    with pytest.raises(ValueError):
        batcher.join("zero", 0)


def test_one_stations_fault_fails_only_its_own_rows(batchers: Callable[..., CrossStationBatcher]) -> None:
    """The mixed batch raises because of station b's row; it is run again per station, so a's
    rows come back and only b's are BatchFailed."""
    gate = Gate(fail_on=lambda rows: -1 in rows)
    batcher = batchers(gate)
    a, b = batcher.join("a", 4), batcher.join("b", 4)
    t0, got0 = submit_in_thread(a, [100], [0.0])  # occupies the runner while a and b queue up
    gate.running.wait(WAIT_S)
    ta, got_a = submit_in_thread(a, [1, 2], [1.0, 1.1])
    wait_until(lambda: batcher.waiting() == {"a": 2})
    tb, got_b = submit_in_thread(b, [3, -1], [1.05, 1.15])
    wait_until(lambda: batcher.waiting() == {"a": 2, "b": 2})
    gate.open.set()
    for t in (t0, ta, tb):
        t.join(WAIT_S)
    assert got0["outputs"] == [1000] and got_a["outputs"] == [10, 20]
    failed = got_b["outputs"]
    assert all(isinstance(o, BatchFailed) for o in failed) and "cannot run [3, -1]" in str(failed[0].error)
    assert gate.batches[1:] == [[1, 3, 2, -1], [1, 2], [3, -1]]  # the mixed batch, then each alone
    counters = batcher.counters()
    assert counters.batches == 2 and counters.failed_batches == 1 and counters.mixed_batches == 1


def test_a_lone_failing_batch_fails_its_rows_and_the_next_batch_still_runs(batchers: Callable[..., CrossStationBatcher]) -> None:
    calls: list[list[int]] = []

    def model(rows: list[int]) -> list[int]:
        calls.append(rows)
        if len(calls) == 1:
            raise RuntimeError("out of memory (simulated)")
        return rows

    seat = batchers(model).join("s", 2)
    out = seat.submit([1, 2, 3], [0.0, 1.0, 2.0])
    assert isinstance(out[0], BatchFailed) and isinstance(out[1], BatchFailed) and out[2] == 3
    assert out[0].error is out[1].error  # one failed batch, one error
    assert seat.submit([4], [0.0]) == [4]


def test_a_model_giving_the_wrong_number_of_outputs_fails_the_batch(batchers: Callable[..., CrossStationBatcher]) -> None:
    seat = batchers(lambda rows: rows[:-1]).join("s", 4)
    out = seat.submit([1, 2], [0.0, 0.0])
    assert all(isinstance(o, BatchFailed) for o in out) and "1 outputs for 2 rows" in str(out[0].error)


def test_a_seat_that_left_cannot_submit(batchers: Callable[..., CrossStationBatcher]) -> None:
    seat = batchers(lambda rows: rows).join("gone", 2)
    seat.leave()
    with pytest.raises(RuntimeError, match="'gone' has left"):
        seat.submit([1], [0.0])


def test_closing_serves_the_queued_rows_then_refuses_new_ones() -> None:
    gate = Gate()
    batcher = CrossStationBatcher(gate)
    seat = batcher.join("s", 1)
    t, got = submit_in_thread(seat, [1, 2], [0.0, 1.0])
    gate.running.wait(WAIT_S)
    closer = threading.Thread(target=batcher.close)
    closer.start()  # blocks until the queue is served
    gate.open.set()
    closer.join(WAIT_S)
    t.join(WAIT_S)
    assert got["outputs"] == [10, 20] and not batcher.runner.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        seat.submit([3], [0.0])


class Crash(BaseException):
    """Not an Exception: the kind of error the runner does not turn into BatchFailed."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_runner_that_dies_fails_the_waiting_rows_instead_of_hanging_them() -> None:
    gate = Gate()

    def model(rows: list[int]) -> list[int]:
        gate(rows)
        raise Crash()

    batcher = CrossStationBatcher(model)
    seat = batcher.join("s", 1)
    t, got = submit_in_thread(seat, [1, 2], [0.0, 1.0])
    gate.running.wait(WAIT_S)
    wait_until(lambda: batcher.waiting() == {"s": 1})
    gate.open.set()
    t.join(WAIT_S)
    assert not t.is_alive() and all(isinstance(o, BatchFailed) for o in got["outputs"])
    assert "stopped" in str(got["outputs"][1].error)
    batcher.runner.join(WAIT_S)
    with pytest.raises(RuntimeError, match="closed"):
        seat.submit([3], [0.0])
