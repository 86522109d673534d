"""The batcher's two-deep pipeline: batch n+1 is launched before batch n is collected, and a
submitter blends batch n while batch n+1 is still on the device.

A CPU computes at launch, so the real model is always ready and the runner would go one batch
at a time; `TwoDeep` wraps a launch/collect pair and says "not ready" until collected, as a GPU
still busy would, so these tests drive the two-deep path on the CPU. It also records the order
of launches, collects and blends. The first tests use plain numbers (milliseconds); the rest run
the tiny MuseTalk weights through the real launch/collect split (render.ModelStages).
"""

from __future__ import annotations

import threading
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pytest
import torch

from poc.face.avatar import Avatar
from poc.face.musetalk.batcher import AtOnce, BatchFailed, CrossStationBatcher, Stages
from poc.face.musetalk.engine import MuseTalkEngine
from poc.face.musetalk.model import MuseTalkModel, NonFiniteError, load_model
from poc.face.musetalk.render import FaceRow, FrameRenderer, ModelStages, unet_and_decode

from .conftest import voiced
from .test_batcher import wait_until
from .test_batching import rows
from .on_device import DEVICE

WAIT_S = 10.0  # upper bound for anything a test waits on; the tests themselves take milliseconds


class TwoDeep:
    """Stages that are never ready before collect (a busy device), recording
    ("launch" | "collect" | "collect failed", batch number, rows) in order. before_collect(n),
    when given, runs at the start of batch n's collect (a test holds a collect there)."""

    def __init__(self, inner: Stages, before_collect: Callable[[int], None] = lambda n: None) -> None:
        self.inner = inner
        self.events: list[tuple[str, int, Any]] = []
        self._before_collect = before_collect
        self._lock = threading.Lock()

    def launch(self, rows: list[Any]) -> tuple[int, Any]:
        launched = self.inner.launch(rows)
        with self._lock:
            number = sum(1 for e in self.events if e[0] == "launch")
            self.events.append(("launch", number, list(rows)))
        return number, launched

    def ready(self, launched: tuple[int, Any]) -> bool:
        return False

    def collect(self, launched: tuple[int, Any]) -> Sequence[Any]:
        number, inner = launched
        self._before_collect(number)
        try:
            outputs = self.inner.collect(inner)
        except Exception:
            self.events.append(("collect failed", number, None))
            raise
        self.events.append(("collect", number, None))
        return outputs

    def index(self, kind: str, number: int) -> int:
        return next(k for k, e in enumerate(self.events) if e[:2] == (kind, number))


def times_ten(rows: list[int]) -> list[int]:
    return [10 * r for r in rows]


def test_the_next_batch_is_launched_before_the_last_is_collected_and_blended_before_the_one_after() -> None:
    blended: dict[int, threading.Event] = {n: threading.Event() for n in range(3)}
    blends_seen_at_collect: dict[int, bool] = {}

    def hold_collect(number: int) -> None:
        # batch n+1 is collected only once the submitter has blended batch n (or WAIT_S passed:
        # then the submitter was waiting for its whole submission, and the assertion below fails)
        if number > 0:
            blends_seen_at_collect[number] = blended[number - 1].wait(WAIT_S)

    stages = TwoDeep(AtOnce(times_ten), hold_collect)
    batcher = CrossStationBatcher(stages)
    order: list[tuple[str, list[int]]] = []

    def blend(positions: list[int], outputs: list[Any]) -> None:
        order.append(("blend", positions))
        stages.events.append(("blend", positions[0] // 2, outputs))
        blended[positions[0] // 2].set()

    try:
        out = batcher.join("s", 2).submit([1, 2, 3, 4, 5, 6], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], on_batch=blend)
    finally:
        assert batcher.close(WAIT_S)
    assert out == [10, 20, 30, 40, 50, 60]
    assert order == [("blend", [0, 1]), ("blend", [2, 3]), ("blend", [4, 5])]  # each batch once, in order
    assert [e[2] for e in stages.events if e[0] == "launch"] == [[1, 2], [3, 4], [5, 6]]  # earliest first
    for n in range(2):
        assert stages.index("launch", n + 1) < stages.index("collect", n)  # two deep
        assert stages.index("blend", n) < stages.index("collect", n + 1)
    assert blends_seen_at_collect == {1: True, 2: True}
    counters = batcher.counters()
    assert counters.batches == 3 and counters.shapes == {2: 3} and list(counters.recent) == [(("s", 2),)] * 3


def test_a_batch_that_fails_at_collect_fails_only_its_rows_and_a_mixed_one_reruns_each_submission() -> None:
    def collect_fails_on_bad_rows(rows: list[int]) -> list[int]:
        if -1 in rows:
            raise RuntimeError(f"non-finite {rows}")
        return times_ten(rows)

    class FailsAtCollect:
        launch = staticmethod(list)
        ready = staticmethod(lambda launched: True)
        collect = staticmethod(collect_fails_on_bad_rows)

    held, gate = threading.Event(), threading.Event()

    def hold_the_first(number: int) -> None:
        if number == 0:  # the first batch holds the runner while the others queue up
            held.set()
            assert gate.wait(WAIT_S)

    stages = TwoDeep(FailsAtCollect(), hold_the_first)
    batcher = CrossStationBatcher(stages)
    a, b = batcher.join("a", 4), batcher.join("b", 4)
    got: dict[str, list[Any]] = {}
    threads = [
        threading.Thread(target=lambda: got.update(first=a.submit([100], [0.0]))),
        threading.Thread(target=lambda: got.update(a=a.submit([1, 2], [1.0, 1.1]))),
        threading.Thread(target=lambda: got.update(b=b.submit([3, -1], [1.05, 1.15]))),
    ]
    try:
        threads[0].start()
        assert held.wait(WAIT_S)
        threads[1].start()
        wait_until(lambda: batcher.waiting() == {"a": 2})
        threads[2].start()
        wait_until(lambda: batcher.waiting() == {"a": 2, "b": 2})
        gate.set()
        for t in threads:
            t.join(WAIT_S)
    finally:
        gate.set()
        assert batcher.close(WAIT_S)
    assert got["first"] == [1000]
    assert got["a"] == [10, 20]
    assert all(isinstance(o, BatchFailed) and "non-finite [3, -1]" in str(o.error) for o in got["b"])
    launches = [e[2] for e in stages.events if e[0] == "launch"]
    assert launches == [[100], [1, 3, 2, -1], [1, 2], [3, -1]]  # the mixed batch, then each alone
    counters = batcher.counters()
    assert counters.batches == 2 and counters.failed_batches == 1 and counters.mixed_batches == 1


def test_closing_with_batches_in_flight_delivers_them() -> None:
    launched_both, release = threading.Event(), threading.Event()

    def hold(number: int) -> None:
        launched_both.set()
        assert release.wait(WAIT_S)

    stages = TwoDeep(AtOnce(times_ten), hold)
    batcher = CrossStationBatcher(stages)
    seat = batcher.join("s", 1)
    got: dict[str, list[Any]] = {}
    submitter = threading.Thread(target=lambda: got.update(out=seat.submit([1, 2], [0.0, 1.0])))
    submitter.start()
    assert launched_both.wait(WAIT_S)  # batch 0 is being collected, batch 1 launched behind it
    assert [e[:2] for e in stages.events] == [("launch", 0), ("launch", 1)] and batcher.waiting() == {}
    closer = threading.Thread(target=batcher.close)
    closer.start()
    release.set()
    closer.join(WAIT_S)
    submitter.join(WAIT_S)
    assert got["out"] == [10, 20] and not batcher.runner.is_alive()
    assert [e[:2] for e in stages.events] == [("launch", 0), ("launch", 1), ("collect", 0), ("collect", 1)]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_runner_that_dies_with_batches_in_flight_fails_their_rows() -> None:
    class Crash(BaseException):
        """Not an Exception: the kind of error the runner does not turn into BatchFailed."""

    def crash(number: int) -> None:
        raise Crash()

    batcher = CrossStationBatcher(TwoDeep(AtOnce(times_ten), crash))
    out = batcher.join("s", 1).submit([1, 2, 3], [0.0, 1.0, 2.0])
    assert all(isinstance(o, BatchFailed) and "stopped" in str(o.error) for o in out)
    batcher.runner.join(WAIT_S)
    assert batcher.closed


# --- the tiny MuseTalk weights on the CPU ---------------------------------------------------


@pytest.fixture(scope="module")
def model(tiny_models: Path) -> MuseTalkModel:
    return load_model(tiny_models, DEVICE)


@pytest.mark.slow
def test_faces_through_the_pipeline_are_the_serial_paths(model: MuseTalkModel) -> None:
    real = rows(model, 6, seed=5)
    stages = TwoDeep(ModelStages(model))
    batcher = CrossStationBatcher(stages)
    try:
        got = batcher.join("s", 2).submit(real, [0.0] * 6)
    finally:
        assert batcher.close(WAIT_S)
    assert stages.index("launch", 1) < stages.index("collect", 0)  # really two deep
    want = [face for k in range(0, 6, 2) for face in unet_and_decode(model, real[k : k + 2])]
    assert len(got) == 6 and all(g.dtype == np.uint8 and g.shape == (256, 256, 3) for g in got)
    for g, w in zip(got, want):  # same batches, same kernels: the same pixels
        np.testing.assert_array_equal(g, w)
    assert np.abs(got[0].astype(int) - got[1].astype(int)).max() > 0  # distinct rows stay distinct


@pytest.mark.slow
def test_a_non_finite_batch_fails_at_collect_and_only_its_own_rows(
    model: MuseTalkModel, caplog: pytest.LogCaptureFixture
) -> None:
    real = rows(model, 4, seed=6)
    nan = FaceRow(latents=torch.full_like(real[2].latents, float("nan")), tokens=real[2].tokens)
    stages = TwoDeep(ModelStages(model))
    batcher = CrossStationBatcher(stages)
    try:
        got = batcher.join("s", 2).submit([real[0], real[1], nan, real[3]], [0.0, 1.0, 2.0, 3.0])
    finally:
        assert batcher.close(WAIT_S)
    kinds = [e[:2] for e in stages.events]
    assert ("launch", 1) in kinds and ("collect failed", 1) in kinds  # launched fine, failed at collect
    want = unet_and_decode(model, real[:2])
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert all(isinstance(o, BatchFailed) and isinstance(o.error, NonFiniteError) for o in got[2:])
    assert "the UNet gave NaN or inf" in str(got[2].error)


@pytest.mark.slow
def test_patches_blended_batch_by_batch_are_those_blended_at_the_end(
    tiny_models: Path, avatar_video: Avatar, tmp_path: Path, model: MuseTalkModel
) -> None:
    """The same frames through a two-deep batcher (blended as each batch returns) and a one-deep
    one (the model as one function): identical patches, in order, one per frame."""
    engine = MuseTalkEngine(avatar_video, tiny_models, DEVICE, 2, 25, 48000, cache_dir=tmp_path, dtype="float32")
    try:
        prepared = engine.prepared
    finally:
        engine.close()
    audio = voiced(16000, 16000).astype(np.float32) / 32768
    frames = [(n, n) for n in range(5)]  # 3 batches of at most 2, the last padded
    patches = []
    for stages in (TwoDeep(ModelStages(model)), partial(unet_and_decode, model)):
        batcher = CrossStationBatcher(stages)
        try:
            renderer = FrameRenderer(model, prepared, avatar_video, 25, seat=batcher.join("s", 2))
            rendered = renderer.render_rows(frames, audio)
        finally:
            assert batcher.close(WAIT_S)
        assert rendered.errors == [] and len(rendered.patches) == 5
        patches.append(rendered.patches)
    for pipelined, serial in zip(*patches):
        assert pipelined is not None and serial is not None
        assert (pipelined.x, pipelined.y) == (serial.x, serial.y)
        np.testing.assert_array_equal(pipelined.pixels, serial.pixels)
    assert any(not np.array_equal(patches[0][0].pixels, p.pixels) for p in patches[0][1:])  # frames differ
