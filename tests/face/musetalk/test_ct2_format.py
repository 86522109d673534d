"""The CTranslate2 reader (ct2_whisper) on small files written here from the format: what a
well-formed file gives, and that each kind of file it cannot read right is refused with a
FormatError saying what and where, not read as garbage or failing deep in numpy or torch."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np
import pytest

from poc.face.musetalk.ct2_whisper import FormatError, encoder_state_dict, read_variables, write_whisper_dir

CODES = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 3, np.dtype(np.float16): 4}


class Raw(NamedTuple):
    """A variable as the file states it, free to disagree with itself."""

    dims: tuple[int, ...]
    code: int
    size: int
    data: bytes


def raw(x: np.ndarray) -> Raw:
    return Raw(x.shape, CODES[x.dtype], x.nbytes, x.tobytes())


def write_model(path: Path, variables: dict[str, np.ndarray | Raw], version: int = 6, spec: str = "WhisperSpec",
                aliases: Iterable[tuple[str, str]] = ()) -> Path:  # fmt: skip
    """A model.bin as CTranslate2 lays one out (little-endian; strings NUL-terminated behind a
    uint16 length): version, spec name, revision, the variables, the aliases."""

    def string(s: str) -> bytes:
        b = s.encode() + b"\0"
        return struct.pack("<H", len(b)) + b

    out = struct.pack("<I", version) + string(spec) + struct.pack("<II", 3, len(variables))
    for name, value in variables.items():
        v = value if isinstance(value, Raw) else raw(value)
        out += string(name) + struct.pack(f"<B{len(v.dims)}I", len(v.dims), *v.dims) + struct.pack("<BI", v.code, v.size) + v.data
    aliases = list(aliases)
    out += struct.pack("<I", len(aliases)) + b"".join(string(a) + string(b) for a, b in aliases)
    path.write_bytes(out)
    return path


def small_encoder(d: int = 6, layers: int = 1, dtype: type = np.float16) -> dict[str, np.ndarray]:
    """An encoder in CTranslate2's names with whisper's structure at width `d` (not whisper-tiny's
    shapes), with the metadata a real file carries."""
    rng = np.random.default_rng(0)

    def t(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(dtype)

    out = {
        "decoder/activation": np.int8(1).reshape(()),
        "encoder/num_heads": np.int16(2).reshape(()),
        "encoder/conv1/weight": t(d, 4, 3),
        "encoder/conv1/bias": t(d),
        "encoder/conv2/weight": t(d, d, 3),
        "encoder/conv2/bias": t(d),
        "encoder/position_encodings/encodings": t(5, d),
        "encoder/layer_norm/gamma": t(d),
        "encoder/layer_norm/beta": t(d),
    }
    for i in range(layers):
        p = f"encoder/layer_{i}/"
        qkv_bias = t(3 * d)
        qkv_bias[d : 2 * d] = 0  # Whisper's key has no bias
        out |= {
            p + "self_attention/linear_0/weight": t(3 * d, d),
            p + "self_attention/linear_0/bias": qkv_bias,
            p + "self_attention/linear_1/weight": t(d, d),
            p + "self_attention/linear_1/bias": t(d),
            p + "self_attention/layer_norm/gamma": t(d),
            p + "self_attention/layer_norm/beta": t(d),
            p + "ffn/linear_0/weight": t(4 * d, d),
            p + "ffn/linear_0/bias": t(4 * d),
            p + "ffn/linear_1/weight": t(d, 4 * d),
            p + "ffn/linear_1/bias": t(d),
            p + "ffn/layer_norm/gamma": t(d),
            p + "ffn/layer_norm/beta": t(d),
        }
    return out


def test_a_well_formed_file_reads_back_exactly(tmp_path: Path) -> None:
    variables = small_encoder(dtype=np.float16) | {"encoder/conv1/bias": np.arange(6, dtype=np.float32)}
    path = write_model(tmp_path / "model.bin", variables, aliases=[("decoder/projection/weight", "encoder/conv1/weight")])
    read = read_variables(path)
    assert read.keys() == variables.keys()
    for name, x in variables.items():
        assert read[name].dtype == x.dtype and read[name].shape == x.shape and np.array_equal(read[name], x), name


@pytest.mark.parametrize("version", [4, 5, 6])
def test_the_versions_laid_out_alike_are_read(tmp_path: Path, version: int) -> None:
    path = write_model(tmp_path / "model.bin", {"encoder/conv1/bias": np.ones(3, np.float32)}, version=version)
    assert read_variables(path)["encoder/conv1/bias"].tolist() == [1, 1, 1]


def test_a_small_encoder_maps_to_transformers_names_in_float32(tmp_path: Path) -> None:
    variables = small_encoder(d=6, layers=2)
    state = encoder_state_dict(read_variables(write_model(tmp_path / "model.bin", variables)))
    assert len(state) == 7 + 2 * 15
    assert all(x.dtype == np.float32 for x in state.values())
    qkv = variables["encoder/layer_1/self_attention/linear_0/weight"].astype(np.float32)
    assert np.array_equal(state["model.encoder.layers.1.self_attn.q_proj.weight"], qkv[:6])
    assert np.array_equal(state["model.encoder.layers.1.self_attn.k_proj.weight"], qkv[6:12])
    assert np.array_equal(state["model.encoder.layers.1.self_attn.v_proj.weight"], qkv[12:])
    assert np.array_equal(state["model.encoder.conv2.weight"], variables["encoder/conv2/weight"].astype(np.float32))


def test_a_quantised_encoder_is_refused_not_read_without_its_scales(tmp_path: Path) -> None:
    # As ct2-transformers-converter --quantization int8 writes it: int8 weights, a float32
    # scale per row, biases in float.
    variables = small_encoder(dtype=np.float32)
    for name in [n for n in variables if n.endswith("/weight") and n.startswith("encoder/layer_")]:
        variables[name] = np.clip(np.rint(variables[name] * 40), -127, 127).astype(np.int8)
        variables[name + "_scale"] = np.full(variables[name].shape[0], 40, np.float32)
    read = read_variables(write_model(tmp_path / "model.bin", variables))  # int8 stays readable
    with pytest.raises(FormatError, match=r"encoder/layer_0/.*weight_scale \(and \d+ more\): the model is quantised.*--quantization float16"):
        encoder_state_dict(read)


def test_an_integer_weight_without_a_scale_is_refused(tmp_path: Path) -> None:
    variables = small_encoder() | {"encoder/conv1/weight": np.ones((6, 4, 3), np.int16)}
    with pytest.raises(FormatError, match=r"encoder/conv1/weight: int16, but .* float32 or float16 only"):
        encoder_state_dict(read_variables(write_model(tmp_path / "model.bin", variables)))


@pytest.mark.parametrize(("code", "kind"), [(5, "bfloat16"), (9, "not a CTranslate2 type")])
def test_a_type_not_read_here_is_named(tmp_path: Path, code: int, kind: str) -> None:
    variables = {"encoder/num_heads": np.int16(6).reshape(()), "encoder/conv1/bias": Raw((4,), code, 8, bytes(8))}
    path = write_model(tmp_path / "model.bin", variables)
    with pytest.raises(FormatError, match=rf"encoder/conv1/bias \(at byte \d+\): type code {code} \({kind}\)") as refused:
        read_variables(path)
    assert "quantised model?" not in str(refused.value)


def test_a_byte_count_that_disagrees_with_the_shape_is_refused(tmp_path: Path) -> None:
    variables = {"encoder/conv1/bias": Raw((4,), 0, 12, bytes(12))}  # 4 float32 take 16
    with pytest.raises(FormatError, match=r"encoder/conv1/bias \(at byte \d+\): 12 bytes of data, but shape \(4,\) of float32 takes 16"):
        read_variables(write_model(tmp_path / "model.bin", variables))


@pytest.mark.parametrize("version", [1, 2, 3, 7, 1 << 20])
def test_a_version_laid_out_otherwise_is_refused(tmp_path: Path, version: int) -> None:
    path = write_model(tmp_path / "model.bin", {"encoder/conv1/bias": np.ones(3, np.float32)}, version=version)
    with pytest.raises(FormatError, match=rf"binary version {version}; only versions 4 to 6"):
        read_variables(path)


def test_a_git_lfs_pointer_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 75537502\n")
    with pytest.raises(FormatError, match="Git LFS pointer"):
        read_variables(path)


def test_a_truncated_file_is_refused_where_it_ends(tmp_path: Path) -> None:
    path = write_model(tmp_path / "model.bin", {"encoder/conv1/weight": np.ones((6, 4, 3), np.float32)})
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(FormatError, match=r"encoder/conv1/weight \(at byte \d+\): the file ends early: 288 bytes of data, \d+ left"):
        read_variables(path)
    path.write_bytes(path.read_bytes()[:55])  # within the variable's dimensions
    with pytest.raises(FormatError, match=r"the file ends early: \d+ bytes wanted at byte \d+"):
        read_variables(path)


def test_a_huge_byte_count_is_refused_before_it_is_read(tmp_path: Path) -> None:
    # 2 GiB stated (with a shape that agrees), a few bytes there: refused without allocating it.
    variables = {"encoder/position_encodings/encodings": Raw((1 << 19, 1024), 0, 1 << 31, bytes(64))}
    with pytest.raises(FormatError, match=r"encodings \(at byte \d+\): the file ends early: 2147483648 bytes of data, 68 left"):
        read_variables(write_model(tmp_path / "model.bin", variables))


def test_a_fused_projection_that_does_not_split_in_three_is_named(tmp_path: Path) -> None:
    variables = small_encoder() | {"encoder/layer_0/self_attention/linear_0/weight": np.ones((17, 6), np.float16)}
    with pytest.raises(FormatError, match=r"encoder/layer_0/self_attention/linear_0/weight: shape \(17, 6\) does not split"):
        encoder_state_dict(read_variables(write_model(tmp_path / "model.bin", variables)))


def test_a_missing_variable_is_named(tmp_path: Path) -> None:
    variables = small_encoder()
    del variables["encoder/layer_0/ffn/linear_1/bias"]
    with pytest.raises(FormatError, match="encoder/layer_0/ffn/linear_1/bias is not in the file"):
        encoder_state_dict(read_variables(write_model(tmp_path / "model.bin", variables)))


def test_a_shape_other_than_whisper_tinys_is_named_before_loading(tmp_path: Path) -> None:
    # Builds whisper-tiny's encoder (a second or so), then stops at the first tensor that differs.
    path = write_model(tmp_path / "model.bin", small_encoder(layers=4))
    with pytest.raises(FormatError, match=r"encoder/conv1/weight: shape \(6, 4, 3\) for model.encoder.conv1.weight, whisper-tiny's is \(384, 80, 3\)"):
        write_whisper_dir(path, tmp_path / "whisper", expect_sha256=None)
    assert not (tmp_path / "whisper").exists()
