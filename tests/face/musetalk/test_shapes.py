"""Batches run in a fixed set of shapes, each warmed up before the stream: the batcher pads every
batch up to one of batch_shapes(limit) (copies of its last row, whose outputs are dropped), so a
ready count never seen before (1, 3, 5, 7... as audio arrives) cannot make cuDNN tune kernels
mid-speech; pads leave every real row's output as it was; warm-up runs each shape once on the
batcher's thread and times the full size; afterwards no batch runs in a shape warm-up did not.

The first tests use a stand-in model (plain numbers) and run in milliseconds; the rest run the
tiny MuseTalk weights on the CPU, where "as it was" is the tolerance test_batching.py explains
(kernel rounding differs between batch sizes, rows never mix)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from poc.face.avatar import Avatar
from poc.face.musetalk.batcher import CrossStationBatcher, batch_shapes, padded_size
from poc.face.musetalk.engine import MuseTalkEngine
from poc.face.musetalk.model import load_model
from poc.face.musetalk.render import FaceRow, unet_and_decode
from poc.face.musetalk.shared import SharedModels

from .conftest import voiced
from .test_batcher import wait_until
from .test_batching import LATENT_TOLERANCE, rows, unet
from .test_engine import feed_in_pieces, slots_for
from .on_device import DEVICE

WAIT_S = 10.0  # upper bound for anything a test waits on


def test_the_shapes_are_powers_of_two_below_the_limit_then_the_limit() -> None:
    assert batch_shapes(1) == (1,)
    assert batch_shapes(2) == (1, 2)
    assert batch_shapes(6) == (1, 2, 4, 6)
    assert batch_shapes(8) == (1, 2, 4, 8)
    assert batch_shapes(12) == (1, 2, 4, 8, 12)
    assert [padded_size(n, 12) for n in range(1, 13)] == [1, 2, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12]
    assert padded_size(5, None) == 8 and padded_size(9, 8) == 16  # no limit, or past it: next power of two
    with pytest.raises(ValueError):
        batch_shapes(0)


def test_padding_computes_fewer_than_twice_the_real_rows() -> None:
    for limit in range(1, 65):
        for rows in range(1, limit + 1):
            shape = padded_size(rows, limit)
            assert shape in batch_shapes(limit) and rows <= shape < 2 * rows


def test_the_model_sees_padded_batches_and_each_submitter_gets_only_its_own_rows() -> None:
    seen: list[list[Any]] = []

    def model(batch: list[int]) -> list[int]:
        seen.append(list(batch))
        return [10 * r for r in batch]

    batcher = CrossStationBatcher(model)
    try:
        seat = batcher.join("s", 8)
        assert seat.submit([1, 2, 3], [0.0, 0.1, 0.2]) == [10, 20, 30]
        assert seat.submit([4, 5, 6, 7, 8], [0.0] * 5) == [40, 50, 60, 70, 80]
        assert seat.submit(list(range(11)), [0.0] * 11) == [10 * r for r in range(11)]  # 8, then 3 padded to 4
        assert seen == [[1, 2, 3, 3], [4, 5, 6, 7, 8, 8, 8, 8], list(range(8)), [8, 9, 10, 10]]
        counters = batcher.counters()
        assert counters.shapes == {4: 2, 8: 2} and counters.padded_rows == 1 + 3 + 0 + 1
        assert counters.rows == {"s": 19}  # real rows only
        assert [b[0][1] for b in counters.recent] == [3, 5, 8, 3]
    finally:
        assert batcher.close(WAIT_S)


def test_a_warming_seat_runs_each_submission_whole_in_its_own_shapes_and_only_then_sets_the_limit() -> None:
    seen: list[list[Any]] = []
    running, release = threading.Event(), threading.Event()

    def model(batch: list[int]) -> list[int]:
        seen.append(list(batch))
        if batch[0] == 0:  # the first batch holds the runner while the others queue up
            running.set()
            assert release.wait(WAIT_S)
        return batch

    batcher = CrossStationBatcher(model)
    try:
        small, big = batcher.join("small", 2), batcher.join("big", 6)
        with big.warming():
            first = threading.Thread(target=small.submit, args=([0], [0.0]))
            first.start()
            assert running.wait(WAIT_S)
            queued = threading.Thread(target=small.submit, args=([1, 2, 3], [0.0, 0.0, 0.0]))
            queued.start()
            wait_until(lambda: batcher.waiting() == {"small": 3})
            warm = threading.Thread(target=big.submit, args=([7, 8, 9, 10, 11], [9.0] * 5))
            warm.start()
            wait_until(lambda: batcher.waiting() == {"small": 3, "big": 5})
            release.set()
            for t in (first, queued, warm):
                t.join(WAIT_S)
        # the warming rows went first despite later deadlines, as one batch padded to big's 6;
        # small's rows were cut at small's own limit, not big's (not yet tuned)
        assert seen == [[0], [7, 8, 9, 10, 11, 11], [1, 2], [3]]
        small.submit([4, 5, 6], [0.0] * 3)  # warmed up: big's size counts now
        assert seen[-1] == [4, 5, 6, 6]
    finally:
        release.set()
        assert batcher.close(WAIT_S)


# --- the tiny MuseTalk weights on the CPU ---------------------------------------------------


@pytest.mark.slow
def test_pad_rows_do_not_change_the_real_rows(tiny_models: Path) -> None:
    model = load_model(tiny_models, DEVICE)
    real = rows(model, 5, seed=3)
    shapes: list[int] = []

    def latents(batch: list[FaceRow]) -> list[torch.Tensor]:
        shapes.append(len(batch))
        return list(unet(model, batch))

    batcher = CrossStationBatcher(latents)
    try:
        padded = torch.stack(batcher.join("s", 8).submit(real, [0.0] * 5))  # run as 8
        assert shapes == [8]
        torch.testing.assert_close(padded, unet(model, real), rtol=0, atol=LATENT_TOLERANCE)
        singles = torch.cat([unet(model, [r]) for r in real])
        torch.testing.assert_close(padded, singles, rtol=0, atol=LATENT_TOLERANCE)
        assert (padded[0] - padded[1]).abs().max() > 0.1  # distinct rows stay distinct
    finally:
        assert batcher.close(WAIT_S)

    faces = CrossStationBatcher(lambda batch: unet_and_decode(model, batch))
    try:
        got = np.stack(faces.join("s", 4).submit(real[:3], [0.0] * 3))  # run as 4
        assert faces.counters().shapes == {4: 1} and faces.counters().padded_rows == 1
    finally:
        assert faces.close(WAIT_S)
    want = np.stack(unet_and_decode(model, real[:3]))
    assert got.shape == want.shape and np.abs(got.astype(np.int16) - want.astype(np.int16)).max() <= 1


@pytest.mark.slow
def test_after_warm_up_odd_ready_counts_run_only_in_warmed_shapes(
    tiny_models: Path, avatar_still: Avatar, tmp_path: Path
) -> None:
    rate, fps, batch = 48000, 25, 8
    engine = MuseTalkEngine(avatar_still, tiny_models, DEVICE, batch, fps, rate, cache_dir=tmp_path, models=SharedModels(), station="s")
    try:
        engine.warm_up()  # through the batcher, so on its runner thread (test_batcher.py)
        warmed = engine.batching
        assert warmed.shapes == {1: 1, 2: 1, 4: 1, 8: 2}  # each shape once, then the timed full batch
        assert [b[0][1] for b in warmed.recent] == [1, 2, 4, 8, 8] and warmed.padded_rows == 0
        # the lead is one full batch's time (the timed pass), not a smaller shape's
        assert engine.lead_seconds == pytest.approx(batch / engine.measured_fps + engine.lookahead_seconds)

        slots = slots_for(voiced(rate * 27 // fps, rate), fps, rate, first_index=500)  # 27 frames
        utterance = engine.start_utterance()
        frames, returned = feed_in_pieces(utterance, slots, [4, 3, 5, 7, 8])
        assert returned == [1, 3, 5, 7, 8]  # ready counts as speech arrives: odd, then a full batch
        assert [f.index for f in frames] == [s.index for s in slots] and all(f.patch is not None for f in frames)
        assert utterance.failures == 0

        after = engine.batching
        streamed = list(after.recent)[len(warmed.recent) :]
        assert [b[0][1] for b in streamed] == [1, 3, 5, 7, 8, 3]  # the last 3 at finish()
        assert set(after.shapes) <= set(batch_shapes(batch)), f"ran unwarmed shapes: {after.shapes}"
        new_runs = {shape: after.shapes[shape] - warmed.shapes.get(shape, 0) for shape in after.shapes}
        assert new_runs == {1: 1, 2: 0, 4: 2, 8: 3}  # 3 -> 4, 5 and 7 -> 8, 8, 3 -> 4
        assert after.padded_rows == 1 + 3 + 1 + 1
    finally:
        engine.close()
