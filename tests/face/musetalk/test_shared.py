"""One MuseTalk per process: engines on the same weights, device and dtype share one loaded model
(loaded once, even when built at the same moment), each closing engine gives its hold back, and
the last one frees the model."""

from __future__ import annotations

import gc
import os
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest

from poc.face.avatar import Avatar
from poc.face.base import EngineError, SpeechSlot
from poc.face.musetalk.engine import MuseTalkEngine
from poc.face.musetalk.model import resolve_dtype
from poc.face.musetalk.shared import SHARED_MODELS, ModelKey, SharedModels

from .conftest import voiced
from .on_device import DEVICE

AUTO_DTYPE = str(resolve_dtype(DEVICE)).removeprefix("torch.")  # what "auto" means on DEVICE

# Builds and runs MuseTalk's networks on the CPU: left out of the fast lane (README, Tests).
pytestmark = pytest.mark.slow

RATE, FPS = 48000, 25


def speak(engine: MuseTalkEngine, frames: int, first_index: int = 0) -> list:
    audio = voiced(RATE * frames // FPS, RATE)
    step = RATE // FPS
    slots = [SpeechSlot(index=first_index + i, audio=audio[i * step : (i + 1) * step]) for i in range(frames)]
    u = engine.start_utterance()
    return u.feed(slots) + u.finish()


def test_two_engines_share_one_load_and_the_last_close_frees_it(
    tiny_models: Path, avatar_still: Avatar, avatar_video: Avatar, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = SharedModels()
    monkeypatch.chdir(tiny_models.parent)
    first = MuseTalkEngine(avatar_still, tiny_models, DEVICE, 4, FPS, RATE, cache_dir=tmp_path, models=models, station="one")
    # the same folder spelled relatively, "auto" for the device (the only one here), and the
    # dtype that "auto" resolves to on it named outright
    second = MuseTalkEngine(
        avatar_video, Path(os.path.relpath(tiny_models)), "auto", 4, FPS, RATE, cache_dir=tmp_path, dtype=AUTO_DTYPE, models=models
    )
    model = first._renderer.model
    assert second._renderer.model is model and models.loads == 1
    assert models.held() == [ModelKey(tiny_models.resolve(), DEVICE, AUTO_DTYPE)]
    assert first.prepared.key != second.prepared.key  # avatars stay per engine
    gone = weakref.ref(model)
    del model

    first.close()
    first.close()  # idempotent: gives nothing back twice
    with pytest.raises(EngineError, match="closed"):
        first.start_utterance()
    frames = speak(second, 6)  # the other one keeps working on the model
    assert [f.index for f in frames] == list(range(6)) and all(f.patch is not None for f in frames)
    assert models.held() != []

    second.close()
    gc.collect()
    assert models.held() == [] and gone() is None  # the weights are freed
    third = MuseTalkEngine(avatar_still, tiny_models, DEVICE, 4, FPS, RATE, cache_dir=tmp_path, models=models)
    assert models.loads == 2  # loaded afresh once nobody held it
    third.close()


def test_engines_built_at_the_same_moment_load_once(tiny_models: Path) -> None:
    models = SharedModels()
    start = threading.Barrier(3)
    leases, errors = [], []

    def acquire() -> None:
        start.wait()
        try:
            leases.append(models.acquire(tiny_models, DEVICE))
        except Exception as e:  # reported below rather than lost in the thread
            errors.append(e)

    threads = [threading.Thread(target=acquire) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and len(leases) == 3
    assert models.loads == 1 and len({id(lease.model) for lease in leases}) == 1
    assert len({id(lease.batcher) for lease in leases}) == 1  # and one batcher for its stations
    assert [lease.release() for lease in leases] == [False, False, True]
    assert leases[0].release() is False  # a second release does nothing
    with pytest.raises(RuntimeError, match="released"):
        leases[0].model


def test_a_failed_load_is_not_remembered(models_copy: Path, avatar_still: Avatar, tmp_path: Path) -> None:
    models = SharedModels()
    unet = models_copy / "musetalkV15" / "unet.pth"
    good = unet.read_bytes()
    unet.write_bytes(good[: len(good) // 2])
    with pytest.raises(EngineError):
        MuseTalkEngine(avatar_still, models_copy, DEVICE, 4, FPS, RATE, cache_dir=tmp_path, models=models)
    assert models.held() == [] and models.loads == 0
    unet.write_bytes(good)
    engine = MuseTalkEngine(avatar_still, models_copy, DEVICE, 4, FPS, RATE, cache_dir=tmp_path, models=models)
    assert models.loads == 1
    engine.close()


def test_unusable_choices_fail_before_any_load(tiny_models: Path) -> None:
    models = SharedModels()
    with pytest.raises(EngineError, match="unknown dtype"):
        models.acquire(tiny_models, DEVICE, "int8")
    assert models.loads == 0 and models.held() == []


def test_engines_share_the_process_model_by_default(tiny_models: Path, avatar_still: Avatar, tmp_path: Path) -> None:
    a = MuseTalkEngine(avatar_still, tiny_models, DEVICE, 2, FPS, RATE, cache_dir=tmp_path)
    b = MuseTalkEngine(avatar_still, tiny_models, DEVICE, 2, FPS, RATE, cache_dir=tmp_path)
    try:
        assert a._renderer.model is b._renderer.model
        assert ModelKey.of(tiny_models, DEVICE) in SHARED_MODELS.held()
        assert a.station != b.station  # unnamed engines still count apart
    finally:
        a.close()
        b.close()


def test_a_closed_engine_keeps_its_last_counters(tiny_models: Path, avatar_still: Avatar, tmp_path: Path) -> None:
    models = SharedModels()
    engine = MuseTalkEngine(avatar_still, tiny_models, DEVICE, 4, FPS, RATE, cache_dir=tmp_path, models=models, station="s")
    speak(engine, 4)
    engine.close()
    counters = engine.batching
    assert counters.rows == {"s": 4} and counters.batches >= 1
    assert np.all([len(b) == 1 for b in counters.recent])
