"""MuseTalk v1.5 weights with random values, written in the real file layout.

For benches and tests that must go through the engine's own loading code (weights check, UNet
state dict assigned into a meta-built module, diffusers and transformers `from_pretrained`) on
a machine without the real checkpoints: the files are written exactly as the published ones are
(a raw `torch.save` state dict for the UNet, diffusers `save_pretrained` for the VAE,
transformers `save_pretrained` of a WhisperForConditionalGeneration for Whisper, so its tensors
carry the real `model.` prefix). Full size costs what the real ones cost to load and run (the
values do not change the FLOPs); `tiny` shrinks the real configs: UNet widths (32, 64, 64, 64),
an 8/16-channel VAE, a Whisper encoder of the real width (384) and depth (4 layers -> 5 states)
with a 3-s window instead of 30 s, so a CPU loads and runs it in moments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from poc.face.musetalk import _deps, configs

TINY_UNET: dict[str, Any] = {**configs.UNET, "block_out_channels": [32, 64, 64, 64], "layers_per_block": 1, "sample_size": 32}
TINY_VAE: dict[str, Any] = {**configs.VAE, "block_out_channels": [8, 8, 16, 16], "layers_per_block": 1, "norm_num_groups": 4}
TINY_WHISPER: dict[str, Any] = {
    **configs.WHISPER,
    "encoder_ffn_dim": 64,
    "decoder_layers": 1,
    "decoder_ffn_dim": 64,
    "vocab_size": 64,
    "max_source_positions": 150,  # a 3-s window: 150 steps of 20 ms
    "max_target_positions": 16,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "decoder_start_token_id": 1,
}
TINY_CHUNK_SECONDS = 3
FORMATS = ("safetensors", "bin")


def write_random_weights(
    models_dir: Path,
    tiny: bool = False,
    vae_format: str = "safetensors",
    whisper_format: str = "safetensors",
    device: str = "cpu",
    seed: int = 0,
) -> Path:
    """Write the v1.5 layout (UNet, VAE, Whisper; no face-parsing weights) under models_dir with
    random weights, full size or tiny; returns models_dir. `device` is where the networks are
    initialised (a GPU draws the full-size UNet's 850 M values in moments, a CPU takes a while);
    the files hold CPU tensors either way. Formats: 'safetensors' or 'bin' (the older names
    the weights check also accepts)."""
    if vae_format not in FORMATS or whisper_format not in FORMATS:
        raise ValueError(f"formats must be one of {FORMATS}, got {vae_format!r} and {whisper_format!r}")
    torch = _deps.require("torch")
    diffusers = _deps.require("diffusers")
    transformers = _deps.require("transformers")
    unet_config = TINY_UNET if tiny else configs.UNET
    vae_config = TINY_VAE if tiny else configs.VAE
    whisper_config = TINY_WHISPER if tiny else configs.WHISPER
    models_dir = Path(models_dir)
    torch.manual_seed(seed)  # seeds every device's generator

    unet_dir = models_dir / "musetalkV15"
    unet_dir.mkdir(parents=True, exist_ok=True)
    (unet_dir / "musetalk.json").write_text(json.dumps(unet_config, indent=2))
    with torch.device(device):
        unet = diffusers.UNet2DConditionModel.from_config(unet_config)
    torch.save(_on_cpu(unet.state_dict()), unet_dir / "unet.pth")
    del unet

    vae_dir = models_dir / "sd-vae"
    with torch.device(device):
        vae = diffusers.AutoencoderKL.from_config(vae_config)
    vae = vae.to("cpu")
    vae.save_pretrained(vae_dir)
    if vae_format == "bin":
        (vae_dir / "diffusion_pytorch_model.safetensors").unlink()
        torch.save(vae.state_dict(), vae_dir / "diffusion_pytorch_model.bin")

    whisper_dir = models_dir / "whisper"
    config = transformers.WhisperConfig(**{k: v for k, v in whisper_config.items() if k != "model_type"})
    with torch.device(device):
        whisper = transformers.WhisperForConditionalGeneration(config)
    whisper = whisper.to("cpu")
    whisper.save_pretrained(whisper_dir)
    if whisper_format == "bin":
        (whisper_dir / "model.safetensors").unlink()
        torch.save({k: v.contiguous() for k, v in whisper.state_dict().items()}, whisper_dir / "pytorch_model.bin")
    chunk = TINY_CHUNK_SECONDS if tiny else configs.WHISPER_PREPROCESSOR["chunk_length"]
    transformers.WhisperFeatureExtractor(feature_size=80, chunk_length=chunk).save_pretrained(whisper_dir)
    return models_dir


def _on_cpu(state: dict[str, Any]) -> dict[str, Any]:
    """The state dict as it is when its tensors are on the CPU already (so a tiny CPU write is
    byte for byte what it always was), else with each tensor copied to the host."""
    if all(t.device.type == "cpu" for t in state.values()):
        return state
    return type(state)((k, v.cpu()) for k, v in state.items())
