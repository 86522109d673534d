"""Upstream's checkpoint layouts, pinned: the committed manifests (src/poc/face/musetalk/manifest/)
hold the facts the research notes give (UNet 686 tensors / 849,947,844 parameters, sd-vae-ft-mse
under its 2022 attention names, whisper-tiny under `model.`); our full-size networks have exactly
those names and shapes; and the project's weight check and strict UNet load accept full-size
files in that layout, in .safetensors and .bin, without allocating a single weight (meta tensors
in the torch files, sparse files for safetensors).

Loading real tensors through the same paths is covered with tiny weights in test_weights.py (.bin
VAE with the old names, .bin and .safetensors Whisper under `model.`); the old names in a
.safetensors VAE, the file sd-vae-ft-mse actually serves first, are loaded here.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from poc.face.musetalk import configs, manifest
from poc.face.musetalk.weights import check_weights, load_state_dict

from .conftest import write_tiny_weights
from .on_device import DEVICE

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

# sd-vae-ft-mse's mid-block attention: today's diffusers name -> the 2022 name its file keeps
OLD_NAME = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
OLD_ATTENTION = {old.strip(".") for old in OLD_NAME.values()}


def test_the_unet_checkpoint_is_686_tensors_of_849947844_parameters() -> None:
    unet = manifest.load("unet")
    assert (unet.tensors, unet.parameters) == (686, 849_947_844)
    assert unet.file == "musetalkV15/unet.pth"
    assert unet.shapes["conv_in.weight"] == (320, 8, 3, 3)  # masked latent ‖ reference latent
    assert unet.shapes["conv_out.weight"] == (4, 320, 3, 3)
    # cross-attention reads whisper-tiny's 384-wide tokens in every attention block
    to_k = [shape for name, shape in unet.shapes.items() if name.endswith("attn2.to_k.weight")]
    assert to_k and all(shape[1] == 384 for shape in to_k)
    assert not any(name.startswith(("unet.", "module.", "model.")) for name in unet.shapes)  # a raw state dict


def test_the_vae_checkpoint_keeps_the_old_attention_names() -> None:
    vae = manifest.load("vae")
    assert vae.parameters == 83_653_863  # ~335 MB at fp32, the published file
    mid = {name.split(".")[-2] for name in vae.shapes if ".mid_block.attentions.0." in name}
    assert mid == {"group_norm", *OLD_ATTENTION}
    assert not any(new in name for name in vae.shapes for new in OLD_NAME)
    assert vae.shapes["encoder.mid_block.attentions.0.query.weight"] == (512, 512)  # linear, not 1x1 conv


def test_the_whisper_checkpoint_names_carry_the_model_prefix() -> None:
    whisper = manifest.load("whisper")
    assert all(name.startswith("model.") for name in whisper.shapes)
    encoder = {name.removeprefix("model.encoder."): s for name, s in whisper.shapes.items() if name.startswith("model.encoder.")}
    layers = {int(name.split(".")[1]) for name in encoder if name.startswith("layers.")}
    assert layers == {0, 1, 2, 3}  # input embedding + 4 layers = the 5 hidden states MuseTalk stacks
    assert encoder["conv1.weight"] == (384, 80, 3)  # 80 mel bins in, 384 wide
    assert encoder["embed_positions.weight"] == (1500, 384)  # 30 s of 20-ms steps
    # the published pytorch_model.bin is 151 MB: every tensor listed, fp32, and no untied output layer
    assert round(whisper.parameters * 4 / 1e6) == 151
    assert not any(name.startswith("proj_out") for name in whisper.shapes)


# Full size costs nothing on the meta device (no memory, no init): about 1 s for the UNet.
@pytest.mark.parametrize("part", manifest.PARTS)
def test_our_full_size_networks_have_exactly_the_manifest_names_and_shapes(part: str) -> None:
    from poc.face.musetalk.manifest.build import upstream_shapes

    ours, pinned = upstream_shapes(part), manifest.load(part).shapes
    missing = sorted(set(pinned) - set(ours))
    extra = sorted(set(ours) - set(pinned))
    reshaped = sorted(name for name in set(ours) & set(pinned) if ours[name] != pinned[name])
    assert (missing[:3], extra[:3], reshaped[:3]) == ([], [], [])
    assert list(ours) == list(pinned)  # same order too, so the file diffs line by line


def write_sparse_safetensors(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """A float32 safetensors file of zeros with these tensors, written as a sparse file: the
    header is real (what the check reads), the data costs no disk and no memory. Its last value
    is 1.0, as a file of zeros to the end is what an unfinished download looks like (the check
    says so; test_zero_filled.py).
    Format: 8-byte little-endian header length, JSON header (dtype, shape, byte offsets), data."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 4 * math.prod(shape)
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        f.seek(8 + len(blob) + offset - 4)
        f.write(struct.pack("<f", 1.0))


def write_meta_torch(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """A torch.save state dict of meta tensors: every name and shape, no data (a few hundred kB)."""
    torch.save({name: torch.empty(shape, device="meta") for name, shape in shapes.items()}, path)


def write_full_size_layout(models: Path, fmt: str, drop: str | None = None) -> Path:
    """Upstream's models/ layout at full size, from the manifests and our configs; `fmt` is the
    VAE's and Whisper's format ('safetensors' or 'bin'); `drop` leaves that tensor out."""
    for folder, name, config in (
        ("musetalkV15", "musetalk.json", configs.UNET),
        ("sd-vae", "config.json", configs.VAE),
        ("whisper", "config.json", configs.WHISPER),
        ("whisper", "preprocessor_config.json", configs.WHISPER_PREPROCESSOR),
    ):
        (models / folder).mkdir(parents=True, exist_ok=True)
        (models / folder / name).write_text(json.dumps(config))
    shapes = {part: {k: v for k, v in manifest.load(part).shapes.items() if k != drop} for part in manifest.PARTS}
    write_meta_torch(models / "musetalkV15/unet.pth", shapes["unet"])
    files = {"safetensors": ("diffusion_pytorch_model.safetensors", "model.safetensors"),
             "bin": ("diffusion_pytorch_model.bin", "pytorch_model.bin")}[fmt]  # fmt: skip
    write = write_sparse_safetensors if fmt == "safetensors" else write_meta_torch
    write(models / "sd-vae" / files[0], shapes["vae"])
    write(models / "whisper" / files[1], shapes["whisper"])
    return models


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_full_size_files_in_upstreams_layout_pass_the_weight_check(tmp_path: Path, fmt: str) -> None:
    models = write_full_size_layout(tmp_path / "models", fmt)
    assert check_weights(models, ("unet", "vae", "whisper")) == []


@pytest.mark.parametrize(
    "drop",
    [
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
        "decoder.mid_block.attentions.0.proj_attn.weight",
        "model.encoder.layers.3.fc1.weight",
    ],
)
def test_a_full_size_file_missing_one_tensor_is_refused(tmp_path: Path, drop: str) -> None:
    """The negative control of the check above: the same layout less one tensor fails, by name."""
    models = write_full_size_layout(tmp_path / "models", "safetensors", drop=drop)
    (problem,) = check_weights(models, ("unet", "vae", "whisper"))
    # the check names tensors as our networks do (modern attention names, no `model.`)
    assert "1 missing tensors" in problem and drop.removeprefix("model.").replace("proj_attn", "to_out.0") in problem


def test_the_full_size_unet_file_loads_strictly_as_load_model_loads_it(tmp_path: Path) -> None:
    """load_model builds the UNet from musetalk.json on the meta device and assigns the file's
    tensors with strict=True; here the file's tensors are meta too, so nothing is allocated."""
    models = write_full_size_layout(tmp_path / "models", "bin")
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel.from_config(json.loads((models / "musetalkV15/musetalk.json").read_text()))
    state = load_state_dict(models / "musetalkV15/unet.pth")
    assert len(state) == 686
    unet.load_state_dict(state, strict=True, assign=True)
    assert sum(p.numel() for p in unet.parameters()) == 849_947_844

    renamed = {k.replace(".to_out.0.", ".proj_attn."): v for k, v in state.items()}  # old names: not for the UNet
    with torch.device("meta"):
        fresh = diffusers.UNet2DConditionModel.from_config(configs.UNET)
    with pytest.raises(RuntimeError, match="Missing key"):
        fresh.load_state_dict(renamed, strict=True, assign=True)


@pytest.mark.slow  # loads tiny networks
def test_a_safetensors_vae_under_the_old_names_loads(tmp_path: Path) -> None:
    """sd-vae-ft-mse serves diffusion_pytorch_model.safetensors first, with the 2022 names."""
    from safetensors.torch import load_file, save_file

    from poc.face.musetalk.model import load_vae

    models = write_tiny_weights(tmp_path / "models")
    path = models / "sd-vae/diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    old = {}
    for name, tensor in state.items():
        for new, was in OLD_NAME.items():
            name = name.replace(new, was)
        old[name] = tensor
    assert {n.split(".")[-2] for n in old if ".mid_block.attentions.0." in n} == {"group_norm", *OLD_ATTENTION}
    save_file(old, str(path))
    assert check_weights(models, ("vae",)) == []
    loaded = load_vae(models, DEVICE).vae.state_dict()
    for name in ("encoder.mid_block.attentions.0.to_q.weight", "decoder.mid_block.attentions.0.to_out.0.bias"):
        assert torch.equal(loaded[name], state[name])
