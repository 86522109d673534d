"""The networks loaded from the real layout, and the shapes through every stage."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from poc.face.avatar import Avatar
from poc.face.base import EngineError
from poc.face.musetalk.engine import MuseTalkEngine
from poc.face.musetalk.model import MuseTalkModel, load_model, positional_encoding, resolve_device

from .conftest import voiced
from .on_device import DEVICE

# Builds and runs MuseTalk's networks on the CPU: left out of the fast lane (README, Tests).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(tiny_models: Path) -> MuseTalkModel:
    return load_model(tiny_models, DEVICE)


def test_weights_load_on_the_device_in_its_default_dtype(model: MuseTalkModel) -> None:
    """float32 on the CPU, float16 on a GPU ('auto')."""
    expected = torch.float16 if DEVICE.startswith("cuda") else torch.float32
    assert model.device == DEVICE and model.dtype == expected
    assert next(model.unet.parameters()).dtype == expected
    assert model.unet.config.cross_attention_dim == 384 and model.unet.config.in_channels == 8


def test_unet_weights_are_the_files_not_a_random_init(tiny_models: Path, model: MuseTalkModel) -> None:
    state = torch.load(tiny_models / "musetalkV15/unet.pth", weights_only=True)
    for key in ("conv_in.weight", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"):
        assert torch.equal(model.unet.state_dict()[key], state[key])


def test_audio_features_are_five_states_per_20ms_step(model: MuseTalkModel) -> None:
    audio = voiced(16000, 16000).astype(np.float32) / 32768
    features = model.encode_audio(audio)
    assert tuple(features.shape) == (150, 5, 384)  # the tiny 3-s window; 1500 for whisper-tiny
    with pytest.raises(ValueError):
        model.encode_audio(np.zeros(48001, np.float32))


def test_tokens_are_time_major_with_the_position_code_added(model: MuseTalkModel) -> None:
    windows = torch.randn(2, 10, 5, 384, device=model.device)
    tokens = model.audio_tokens(windows)
    assert tuple(tokens.shape) == (2, 50, 384)
    pe = torch.from_numpy(positional_encoding(50, 384)).to(tokens)
    # token t*5 + l is step t, layer l
    torch.testing.assert_close(tokens[1, 3 * 5 + 2], windows[1, 3, 2].to(tokens) + pe[17])


def test_positional_encoding_is_the_sinusoid_table() -> None:
    pe = positional_encoding(50, 384)
    assert pe[0, 0] == 0 and pe[0, 1] == 1
    assert pe[1, 0] == pytest.approx(np.sin(1.0)) and pe[1, 1] == pytest.approx(np.cos(1.0))
    assert pe[7, 4] == pytest.approx(np.sin(7 / 10000 ** (4 / 384)), rel=1e-6)
    assert pe[7, 5] == pytest.approx(np.cos(7 / 10000 ** (4 / 384)), rel=1e-6)


def test_reference_latents_unet_and_decode_shapes(model: MuseTalkModel) -> None:
    crops = np.random.default_rng(0).integers(0, 256, (3, 256, 256, 3), dtype=np.uint8)
    latents = model.codec.encode_reference(crops, batch=2)
    assert latents.shape == (3, 8, 32, 32) and latents.dtype == np.float32
    # masked half and full crop differ; the same crop always gives the same latent
    assert not np.allclose(latents[:, :4], latents[:, 4:])
    np.testing.assert_allclose(model.codec.encode_reference(crops[:1]), latents[:1], rtol=1e-4, atol=1e-5)
    tokens = model.audio_tokens(torch.randn(3, 10, 5, 384, device=model.device))
    predicted = model.unet_step(torch.from_numpy(latents).to(model.device), tokens)
    assert tuple(predicted.shape) == (3, 4, 32, 32)
    faces = model.codec.decode(predicted)
    assert faces.shape == (3, 256, 256, 3) and faces.dtype == np.uint8


def test_channels_last_gives_the_same_faces(tiny_models: Path) -> None:
    """The layout is a speed option only (MuseTalkModel.tune): the faces stay the same, to the
    kernels' rounding."""
    plain, tuned = load_model(tiny_models, DEVICE, "float32"), load_model(tiny_models, DEVICE, "float32")
    tuned.tune(channels_last=True)
    generator = torch.Generator().manual_seed(3)
    latents = torch.randn(2, 8, 32, 32, generator=generator).to(DEVICE)
    windows = torch.randn(2, 10, 5, 384, generator=generator).to(DEVICE)
    faces = [m.codec.decode(m.unet_step(latents, m.audio_tokens(windows))) for m in (plain, tuned)]
    kernels = [w for m in (tuned.unet, tuned.codec.vae) for w in m.parameters() if w.dim() == 4]
    assert kernels and all(w.is_contiguous(memory_format=torch.channels_last) for w in kernels)
    assert np.abs(faces[0].astype(int) - faces[1].astype(int)).max() <= 1


def test_device_choice() -> None:
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_a_missing_torch_is_a_start_up_error_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, tiny_models: Path, avatar_still: Avatar
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(EngineError, match=r"needs the musetalk extra: pip install 'poc\[musetalk\]'"):
        MuseTalkEngine(avatar_still, tiny_models, DEVICE, 4, 25, 48000)


def test_importing_poc_and_the_package_does_not_import_torch() -> None:
    code = "import sys, poc, poc.face.musetalk; sys.exit('torch' in sys.modules or 'diffusers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
