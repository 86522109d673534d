"""Weight files a download manager preallocated and never filled in (zeros from some point on, or
throughout) are named as incomplete downloads by the check and at start-up; real weights, zero
tensors and all, still pass."""

import argparse
import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from poc.face.base import EngineError
from poc.face.musetalk.commands import run_check
from poc.face.musetalk.model import load_model
from poc.face.musetalk.weights import check_weights

from .conftest import write_parser_weights, write_tiny_weights
from .on_device import DEVICE

# Builds MuseTalk's networks on the CPU: left out of the fast lane (README, Tests).
pytestmark = pytest.mark.slow

WEIGHTS = ("whisper/model.safetensors", "sd-vae/diffusion_pytorch_model.safetensors", "musetalkV15/unet.pth")
REPOS = {"whisper": "openai/whisper-tiny", "sd-vae": "stabilityai/sd-vae-ft-mse", "musetalkV15": "TMElyralab/MuseTalk"}


def data_start(path: Path) -> int:
    """Where a safetensors file's tensor data begins (after its length-prefixed JSON header);
    0 for a torch file, whose zip has no single header to keep."""
    if path.suffix != ".safetensors":
        return 0
    with path.open("rb") as f:
        return 8 + struct.unpack("<Q", f.read(8))[0]


def zero_from(path: Path, fraction: float) -> None:
    """What an unfinished preallocated download leaves: the file at its full size, the header
    and the first `fraction` of the data written, zeros after."""
    start = data_start(path)
    zero_tail(path, int((path.stat().st_size - start) * (1 - fraction)))


def zero_tail(path: Path, unwritten: int) -> None:
    """Zero the file's last `unwritten` bytes, keeping its size."""
    data = bytearray(path.read_bytes())
    data[len(data) - unwritten :] = bytes(unwritten)
    path.write_bytes(bytes(data))


def assert_incomplete_download(line: str, path: Path) -> None:
    assert line.startswith(f"corrupt {path}: "), line
    assert "zeros" in line and "incomplete download" in line and "download it again" in line
    assert REPOS[path.parent.name] in line
    assert "\n" not in line and "weights_only" not in line


@pytest.mark.parametrize("fraction", [0.0, 0.5], ids=["header-only", "half"])
@pytest.mark.parametrize("rel", WEIGHTS)
def test_a_file_zero_filled_past_its_header_is_an_incomplete_download(models_copy: Path, rel: str, fraction: float) -> None:
    path = models_copy / rel
    zero_from(path, fraction)
    (line,) = check_weights(models_copy)
    assert_incomplete_download(line, path)


@pytest.mark.parametrize("rel", WEIGHTS)
def test_a_file_missing_only_its_last_block_is_an_incomplete_download(models_copy: Path, rel: str) -> None:
    """Stopped just short of the end: 64 KiB of zeros (the sampled block) is enough to tell."""
    path = models_copy / rel
    zero_tail(path, 64 << 10)
    (line,) = check_weights(models_copy)
    assert_incomplete_download(line, path)


@pytest.mark.parametrize("rel", WEIGHTS)
def test_a_file_of_zeros_only_is_an_incomplete_download(models_copy: Path, rel: str) -> None:
    path = models_copy / rel
    path.write_bytes(bytes(path.stat().st_size))
    (line,) = check_weights(models_copy)
    assert_incomplete_download(line, path)
    assert "all zeros" in line


def test_a_zero_filled_config_is_named_too(models_copy: Path) -> None:
    path = models_copy / "sd-vae/config.json"
    path.write_bytes(bytes(path.stat().st_size))
    (line,) = check_weights(models_copy)
    assert line.startswith(f"corrupt {path}: ") and "incomplete download" in line


def test_bin_checkpoints_zero_filled_are_named(tmp_path: Path) -> None:
    models = write_tiny_weights(tmp_path / "models", vae_format="bin", whisper_format="bin")
    path = models / "whisper/pytorch_model.bin"
    zero_from(path, 0.5)
    (line,) = check_weights(models)
    assert_incomplete_download(line, path)


def test_the_engine_refuses_to_load_a_zero_filled_file(models_copy: Path) -> None:
    path = models_copy / "whisper/model.safetensors"
    zero_from(path, 0.5)
    with pytest.raises(EngineError, match="incomplete download") as caught:
        load_model(models_copy, DEVICE)
    assert str(path) in str(caught.value)


def test_models_check_prints_one_line_naming_the_file(models_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = models_copy / "sd-vae/diffusion_pytorch_model.safetensors"
    zero_from(path, 0.5)
    assert run_check(argparse.Namespace(models_dir=models_copy)) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert_incomplete_download(err[0], path)


def test_a_zero_filled_parser_file_is_an_incomplete_download(models_copy: Path) -> None:
    path = write_parser_weights(models_copy)
    zero_from(path, 0.9)
    (line,) = check_weights(models_copy)
    assert line.startswith(f"corrupt {path}: ") and "incomplete download" in line
    assert "vivym/face-parsing-bisenet" in line and "weights_only" not in line


def last_tensor(path: Path) -> str:
    """The name of the tensor whose data ends a safetensors file."""
    header = json.loads(path.read_bytes()[8 : data_start(path)])
    header.pop("__metadata__", None)
    return max(header, key=lambda name: header[name]["data_offsets"][1])


@pytest.mark.parametrize("rel", WEIGHTS[:2])
def test_a_small_zero_tensor_at_the_very_end_still_passes(models_copy: Path, rel: str) -> None:
    """Zero biases and buffers are real: one small all-zero tensor, even the last one in the
    file, is no sign of a missing download."""
    path = models_copy / rel
    tensors = load_file(str(path))
    last = last_tensor(path)
    assert tensors[last].numel() * tensors[last].element_size() < 64 << 10
    tensors[last] = torch.zeros_like(tensors[last])
    save_file(tensors, str(path), metadata={"format": "pt"})
    assert last_tensor(path) == last
    assert check_weights(models_copy) == []


def test_zero_biases_throughout_still_pass(models_copy: Path) -> None:
    """A file whose every bias is zero (as freshly initialised transformers models are) passes."""
    path = models_copy / "whisper/model.safetensors"
    tensors = {k: (torch.zeros_like(v) if k.endswith(".bias") else v) for k, v in load_file(str(path)).items()}
    save_file(tensors, str(path), metadata={"format": "pt"})
    assert check_weights(models_copy) == []
