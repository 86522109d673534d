"""One loaded MuseTalk per (weights folder, device, dtype) in the process, shared by every station.

The networks are the costly part to hold (3.4 GB of UNet alone on the GPU), and nothing in them
belongs to a station: avatars are prepared per engine, audio features and blending are per
utterance. So engines acquire a lease on a shared model: the first acquirer loads it, later ones
get the same object, and the last release drops it. Each shared model comes with its batcher
(poc.face.musetalk.batcher) and that batcher's thread, so renders from all its stations are
batched together (two batches in flight on a GPU: see the batcher); the last release also stops
the thread.

Thread-safety: engines are built in worker threads, possibly at the same moment. A lock guards
the table; a second lock per model makes a concurrent acquirer of the same key wait for the load
in progress rather than load again, without holding up loads of other keys. A load that fails
is not remembered: the next acquirer tries again and gets its own error.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

import attrs

from poc.face.musetalk.batcher import CrossStationBatcher
from poc.face.musetalk.model import MuseTalkModel, load_model, resolve_device, resolve_dtype
from poc.face.musetalk.render import ModelStages
from poc.face.musetalk.weights import require_weights

log = logging.getLogger(__name__)


@attrs.frozen
class ModelKey:
    """What makes two loads the same: the resolved folder, device and dtype."""

    models_dir: Path
    device: str
    dtype: str  # one of model.DTYPES other than "auto"

    @classmethod
    def of(cls, models_dir: Path, device: str, dtype: str = "auto") -> "ModelKey":
        """Resolve 'auto' choices first (EngineError for unusable ones, before any load), so
        'auto' and the choice it stands for share one model."""
        device = resolve_device(device)
        dtype = str(resolve_dtype(device, dtype)).removeprefix("torch.")
        return cls(Path(models_dir).resolve(), device, dtype)


class _Shared:
    def __init__(self) -> None:
        self.users = 0
        self.loading = threading.Lock()
        self.model: MuseTalkModel | None = None
        self.batcher: CrossStationBatcher | None = None


class ModelLease:
    """One engine's hold on a shared model and its batcher; release() once done (idempotent).
    A released lease holds nothing, so it does not keep the model alive."""

    def __init__(self, owner: "SharedModels", key: ModelKey, shared: _Shared) -> None:
        self.key = key
        self._owner = owner
        self._shared: _Shared | None = shared

    @property
    def model(self) -> MuseTalkModel:
        model = self._held().model
        assert model is not None  # set before any lease is handed out
        return model

    @property
    def batcher(self) -> CrossStationBatcher:
        batcher = self._held().batcher
        assert batcher is not None
        return batcher

    def release(self) -> bool:
        """Give the model back; True when this was the last lease (the model is dropped)."""
        shared, self._shared = self._shared, None
        if shared is None:
            return False
        return self._owner._drop(self.key, shared)

    def _held(self) -> _Shared:
        if self._shared is None:
            raise RuntimeError("this model lease was released")
        return self._shared


class SharedModels:
    """The table of loaded models. `loads` counts the loads done (the tests read it)."""

    def __init__(self, load: Callable[[Path, str, str], MuseTalkModel] = load_model) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._table: dict[ModelKey, _Shared] = {}
        self.loads = 0

    def acquire(self, models_dir: Path, device: str, dtype: str = "auto") -> ModelLease:
        """A lease on the model for these settings, loading it if nobody holds it. Blocking;
        raises EngineError as load_model does, missing weights before an unusable device (the
        key resolves the device), as load_model orders them."""
        require_weights(Path(models_dir))
        key = ModelKey.of(models_dir, device, dtype)
        with self._lock:
            shared = self._table.setdefault(key, _Shared())
            shared.users += 1  # counted before loading: a failed load must not drop a waiter's entry
        try:
            with shared.loading:
                if shared.model is None:
                    model = self._load(key.models_dir, key.device, key.dtype)
                    shared.batcher = CrossStationBatcher(ModelStages(model))
                    shared.model = model
                    with self._lock:
                        self.loads += 1
        except BaseException:
            self._drop(key, shared)
            raise
        return ModelLease(self, key, shared)

    def batchers(self) -> list[CrossStationBatcher]:
        """The batchers of the models loaded now (for /metrics)."""
        with self._lock:
            return [shared.batcher for shared in self._table.values() if shared.batcher is not None]

    def held(self) -> list[ModelKey]:
        """The keys of the models loaded now."""
        with self._lock:
            return [key for key, shared in self._table.items() if shared.model is not None]

    def _drop(self, key: ModelKey, shared: _Shared) -> bool:
        with self._lock:
            shared.users -= 1
            if shared.users > 0:
                return False
            if self._table.get(key) is shared:
                del self._table[key]
        batcher, shared.model, shared.batcher = shared.batcher, None, None
        if batcher is not None and not batcher.close():
            log.warning("MuseTalk: a batch was still running when its model was released")
        return True


SHARED_MODELS = SharedModels()  # the process's table: every engine uses it unless given another
