"""Tiny random MuseTalk weights in the real file layout, and small avatars.

The weights come from poc.face.musetalk.random_weights (the benches write the same layout at full
size): the real file formats from the real configs shrunk, so they load through the same code as
the real weights, at a fraction of the cost.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

# One intra-op thread: the tiny models gain nothing from more, and on a small machine shared with
# other work torch's OpenMP workers spin against each other (this folder took 430 s with the
# default two threads under load, 43 s with one). Assertions do not depend on the thread count.
torch.set_num_threads(1)

from poc.face.avatar import Avatar, load_avatar  # noqa: E402
from poc.face.musetalk.random_weights import write_random_weights  # noqa: E402
from poc.paths import DEFAULT_AVATAR  # noqa: E402

SIZE = (320, 180)


def write_tiny_weights(models_dir: Path, vae_format: str = "safetensors", whisper_format: str = "safetensors") -> Path:
    """Write the v1.5 layout with tiny random weights (seed 0); formats 'safetensors' or 'bin'."""
    return write_random_weights(models_dir, tiny=True, vae_format=vae_format, whisper_format=whisper_format)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only tiny layout shared by the session (copy it before changing anything)."""
    return write_tiny_weights(tmp_path_factory.mktemp("models"))


@pytest.fixture
def models_copy(tiny_models: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny layout that a test may break."""
    return Path(shutil.copytree(tiny_models, tmp_path / "models"))


@pytest.fixture(scope="session")
def avatar_still() -> Avatar:
    """The default portrait fitted to 320x180."""
    return load_avatar(DEFAULT_AVATAR, *SIZE)


def write_video(path: Path, frames: list[np.ndarray], fps: int = 30) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (frames[0].shape[1], frames[0].shape[0]))
    try:
        for f in frames:
            writer.write(f)
    finally:
        writer.release()
    return path


@pytest.fixture(scope="session")
def avatar_video(tmp_path_factory: pytest.TempPathFactory) -> Avatar:
    """A 3-frame video of the portrait drifting right by 6 px a frame (distinct body frames)."""
    image = cv2.imread(str(DEFAULT_AVATAR))
    frames = [np.roll(image, 6 * k, axis=1) for k in range(3)]
    path = write_video(tmp_path_factory.mktemp("video") / "drift.avi", frames)
    return load_avatar(path, *SIZE)


def voiced(n: int, rate: int, amplitude: float = 0.3) -> np.ndarray:
    """int16 vowel-like audio (harmonics of 130 Hz) that no silence detector takes for silence."""
    t = np.arange(n) / rate
    x = sum(np.sin(2 * np.pi * 130 * k * t) / k for k in range(1, 10))
    return np.clip(amplitude * 32767 * x / 2, -32768, 32767).astype(np.int16)


def write_parser_weights(models_dir: Path, drop_step_counters: bool = False) -> Path:
    """A random BiSeNet state dict as `face-parse-bisent/79999_iter.pth` (a raw torch.save, as the
    published file is). drop_step_counters: leave out BN's num_batches_tracked, as very old
    checkpoints do."""
    from poc.face.musetalk.bisenet import FaceParsingNet

    torch.manual_seed(1)
    state = FaceParsingNet().state_dict()
    if drop_step_counters:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = models_dir / "face-parse-bisent" / "79999_iter.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def tiny_models_with_parser(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny layout plus the (full-size, random) face-parsing weights; read-only."""
    models = Path(shutil.copytree(tiny_models, tmp_path_factory.mktemp("parsed") / "models"))
    write_parser_weights(models)
    return models
