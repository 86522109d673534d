"""Half precision on the CPU: the GPU's float16 path (and bfloat16) with the tiny weights.

torch runs conv, group norm, attention and interpolation in float16 and bfloat16 on the CPU, so
the dtype plumbing a GPU uses (weights, audio tokens, position code, reference latents, VAE
scaling and pixel normalisation) is checked here against float32 with the same weights.
"""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from poc.face.avatar import Avatar
from poc.face.base import EngineError, FacePatch, SpeechSlot
from poc.face.musetalk.engine import MuseTalkEngine
from poc.face.musetalk.model import MuseTalkModel, NonFiniteError, load_model, resolve_dtype
from poc.face.musetalk.render import FrameRenderer

from .conftest import voiced
from .on_device import DEVICE

# Builds and runs MuseTalk's networks on the CPU: left out of the fast lane (README, Tests).
pytestmark = pytest.mark.slow

RATE, FPS = 48000, 25
FRAMES = [(n, n) for n in range(6)]  # (number in the utterance, counter): 6 voiced frames
HALF = ["float16", "bfloat16"]

# Mean |difference| of the decoded 256x256 faces from float32's, in 8-bit levels. Measured on the
# tiny weights: float16 0.14 (max 7), bfloat16 1.05 (max 40: 8 mantissa bits compound to ~2% RMS
# error in the UNet's latents). Slips on the half path alone measured far above: no position
# code 8.7, decoding without the latent scale 19.7, output pixels taken as 0..1 instead of
# -1..1 106. A single max would be loose (rounding alone reaches 40), hence the mean.
FACE_MEAN_TOLERANCE = {"float16": 0.5, "bfloat16": 3.0}
# Largest |difference| of reference latents over their largest magnitude. Measured: float16
# 0.24%, bfloat16 2.6%; pixels normalised to 0..1 give 63%, a latent scale left out 440%.
LATENT_TOLERANCE = {"float16": 0.01, "bfloat16": 0.05}


@pytest.fixture(scope="module")
def reference(tiny_models: Path, avatar_video: Avatar, tmp_path_factory: pytest.TempPathFactory) -> MuseTalkEngine:
    """A float32 engine: its prepared avatar feeds every dtype, so only the model's dtype differs."""
    return MuseTalkEngine(avatar_video, tiny_models, DEVICE, 8, FPS, RATE, cache_dir=tmp_path_factory.mktemp("cache"), dtype="float32")


@pytest.fixture(scope="module", params=HALF)
def half(request: pytest.FixtureRequest, tiny_models: Path) -> MuseTalkModel:
    return load_model(tiny_models, DEVICE, request.param)


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return voiced(16000, 16000).astype(np.float32) / 32768  # 1 s at 16 kHz: every frame voiced


def render(model: MuseTalkModel, engine: MuseTalkEngine, avatar: Avatar, audio: np.ndarray) -> tuple[list[FacePatch | None], np.ndarray]:
    """Patches from the real FrameRenderer, and the raw faces the VAE decoded for them."""
    decoded: list[np.ndarray] = []
    codec = model.codec
    codec.decode = lambda latents: decoded.append(type(codec).decode(codec, latents)) or decoded[-1]
    try:
        patches = FrameRenderer(model, engine.prepared, avatar, FPS).render(FRAMES, audio)
    finally:
        del codec.decode  # back to the class's method
    return patches, np.concatenate(decoded)


@pytest.fixture(scope="module")
def reference_faces(reference: MuseTalkEngine, avatar_video: Avatar, audio: np.ndarray) -> np.ndarray:
    return render(reference._renderer.model, reference, avatar_video, audio)[1]


def name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def test_auto_is_float32_on_the_cpu_and_float16_on_cuda() -> None:
    assert resolve_dtype("cpu") == resolve_dtype("cpu", "auto") == torch.float32
    assert resolve_dtype("cuda:0", "auto") == torch.float16  # only the name is looked at
    assert resolve_dtype("cpu", "bfloat16") == torch.bfloat16


def test_bfloat16_on_a_gpu_without_it_is_a_start_up_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    with pytest.raises(EngineError, match="bfloat16 needs an Ampere or newer GPU"):
        resolve_dtype("cuda", "bfloat16")
    assert resolve_dtype("cpu", "bfloat16") == torch.bfloat16  # the CPU has it natively


def test_an_unknown_dtype_is_an_engine_error(tiny_models: Path) -> None:
    with pytest.raises(EngineError, match="unknown dtype 'int8'"):
        resolve_dtype("cpu", "int8")
    with pytest.raises(EngineError, match="unknown dtype 'half'"):
        load_model(tiny_models, DEVICE, "half")  # before any weights are read


def test_every_network_and_the_position_code_use_the_chosen_dtype(half: MuseTalkModel) -> None:
    dtype = half.dtype
    assert dtype in (torch.float16, torch.bfloat16) and half.codec.dtype == dtype
    for net in (half.unet, half.audio_encoder, half.codec.vae):
        assert {p.dtype for p in net.parameters()} == {dtype}
    assert half._pe.dtype == dtype


def test_half_precision_faces_are_uint8_images_close_to_float32(
    half: MuseTalkModel, reference: MuseTalkEngine, avatar_video: Avatar, audio: np.ndarray, reference_faces: np.ndarray
) -> None:
    patches, faces = render(half, reference, avatar_video, audio)
    assert faces.shape == reference_faces.shape == (len(FRAMES), 256, 256, 3) and faces.dtype == np.uint8
    for patch, (_, counter) in zip(patches, FRAMES):
        assert patch is not None and patch.pixels.dtype == np.uint8
        x, y, w, h = reference.prepared.geometry[avatar_video.frame_number(counter)].paste
        assert (patch.x, patch.y, patch.pixels.shape) == (x, y, (h, w, 3))
    # the faces carry a picture (not one flat colour that a NaN cast would give) ...
    assert faces.std() > 10
    # ... and it is float32's picture up to rounding
    diff = np.abs(faces.astype(np.int16) - reference_faces.astype(np.int16))
    assert diff.mean() <= FACE_MEAN_TOLERANCE[name(half.dtype)], f"mean {diff.mean():.2f}, max {diff.max()}"


def test_half_precision_reference_latents_are_close_to_float32(half: MuseTalkModel, reference: MuseTalkEngine) -> None:
    crops = np.random.default_rng(1).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    crops[:, 64:192, 64:192] //= 3  # some structure: a dark square in the middle
    want = reference._renderer.model.codec.encode_reference(crops)
    got = half.codec.encode_reference(crops)
    assert got.dtype == np.float32 and got.shape == want.shape
    error = np.abs(got - want).max() / np.abs(want).max()
    assert error <= LATENT_TOLERANCE[name(half.dtype)], f"relative error {error:.4f}"


def test_float16_overflow_in_decode_is_an_error_not_garbage(tiny_models: Path, caplog: pytest.LogCaptureFixture) -> None:
    """3e4 / 0.18215 is past float16's largest value (65504): the decoder sees inf."""
    latents = torch.full((1, 4, 32, 32), 3e4, device=DEVICE)
    assert load_model(tiny_models, DEVICE, "float32").codec.decode(latents).shape == (1, 256, 256, 3)
    codec = load_model(tiny_models, DEVICE, "float16").codec
    with caplog.at_level(logging.WARNING, logger="poc.face.musetalk.model"):
        for _ in range(2):
            with pytest.raises(NonFiniteError, match="VAE decode gave NaN or inf values in torch.float16"):
                codec.decode(latents)
    warnings = [r.getMessage() for r in caplog.records if "NaN or inf" in r.getMessage()]
    assert len(warnings) == 1 and "TALKING_FACE_DTYPE=bfloat16" in warnings[0]  # once, with the remedy
    with pytest.raises(NonFiniteError, match="the UNet gave NaN"):
        codec.decode(torch.full((1, 4, 32, 32), float("nan"), device=DEVICE))


def test_a_float16_engine_renders_and_counts_overflowing_batches_as_failures(
    tiny_models: Path, avatar_still: Avatar, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="poc.face.musetalk.model"):
        engine = MuseTalkEngine(avatar_still, tiny_models, DEVICE, 4, FPS, RATE, cache_dir=tmp_path, dtype="float16")
    assert any(m.startswith("MuseTalk v1.5 loaded") and "on cpu (torch.float16)" in m for m in caplog.messages)
    model = engine._renderer.model
    assert model.dtype == torch.float16 and engine.prepared.latents.dtype == np.float32
    audio = voiced(RATE * 2 // 5, RATE)  # 10 frames
    step = RATE // FPS
    slots = [SpeechSlot(index=i, audio=audio[i * step : (i + 1) * step]) for i in range(10)]

    u = engine.start_utterance()
    frames = u.feed(slots) + u.finish()
    assert [f.index for f in frames] == list(range(10)) and u.failures == 0
    assert all(f.patch is not None for f in frames)

    real, batches = model.unet_step, []

    def overflowing(latents: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        batches.append(len(latents))
        return real(latents, tokens) * 3e4  # past float16's range once divided by the latent scale

    monkeypatch.setattr(model, "unet_step", overflowing)
    u = engine.start_utterance()
    frames = u.feed(slots) + u.finish()
    assert [f.index for f in frames] == list(range(10))
    assert all(f.patch is None for f in frames)  # the idle face, not garbage
    # every batch failed, and was counted: 7 ready frames as 4 + 3, then 3 at finish(), each
    # run padded to the shape 4 (poc.face.musetalk.batcher.batch_shapes)
    assert batches == [4, 4, 4] and u.failures == len(batches)
    engine.close()
