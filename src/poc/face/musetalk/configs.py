"""The real MuseTalk v1.5 architectures, as configs (no weights).

Used to build full-size models with random weights, which cost exactly what the real ones cost
(the benchmark), and as the reference the tests' tiny configs are shrunk from. Values are those
of `musetalkV15/musetalk.json`, stabilityai/sd-vae-ft-mse `config.json` and openai/whisper-tiny
`config.json` / `preprocessor_config.json` (see docs/research musetalk.md §1).
"""

from __future__ import annotations

from typing import Any

UNET: dict[str, Any] = {
    "_class_name": "UNet2DConditionModel",
    "in_channels": 8,  # masked-face latent + reference latent
    "out_channels": 4,
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "layers_per_block": 2,
    "attention_head_dim": 8,  # legacy key: diffusers reads it as 8 heads
    "cross_attention_dim": 384,  # whisper-tiny width
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "act_fn": "silu",
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "center_input_sample": False,
    "sample_size": 64,  # nominal; the real latent is 32x32
}

VAE: dict[str, Any] = {
    "_class_name": "AutoencoderKL",
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "sample_size": 256,
}

WHISPER: dict[str, Any] = {
    "model_type": "whisper",
    "d_model": 384,
    "encoder_layers": 4,
    "encoder_attention_heads": 6,
    "encoder_ffn_dim": 1536,
    "decoder_layers": 4,
    "decoder_attention_heads": 6,
    "decoder_ffn_dim": 1536,
    "num_mel_bins": 80,
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "vocab_size": 51865,
}

WHISPER_PREPROCESSOR: dict[str, Any] = {
    "feature_size": 80,
    "sampling_rate": 16000,
    "hop_length": 160,
    "n_fft": 400,
    "chunk_length": 30,
}
