"""Upstream's checkpoint layouts, pinned as facts: every tensor's name and shape, per network.

MuseTalk v1.5's weights are three files we never see in tests (3.4 GB, 335 MB, 151 MB), loaded
strictly by name. So the names and shapes they must carry are committed here, one JSON file per
network, in upstream's naming:

- unet.json: `musetalkV15/unet.pth`, a raw state dict of diffusers' UNet2DConditionModel built
  from `musetalk.json` (686 tensors, 849,947,844 parameters), current diffusers names.
- vae.json: stabilityai/sd-vae-ft-mse, whose mid-block attention still has the 2022 names
  (`query`, `key`, `value`, `proj_attn`) that diffusers renames on load.
- whisper.json: openai/whisper-tiny as transformers saves a WhisperForConditionalGeneration:
  every name under `model.` (the decoder too, although only the encoder is used); the output
  projection is tied to the token embedding and not stored.

The files are written by `python -m poc.face.musetalk.manifest.build` from our own full-size
configs (configs.py) on torch's meta device, renamed by the facts above; never from upstream's
code. Reading them needs no torch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import attrs

PARTS = ("unet", "vae", "whisper")
HERE = Path(__file__).parent


@attrs.frozen
class Manifest:
    """One network's checkpoint: where it lives (`file` under models/, `repo` on the hub), how its
    names are spelt (`naming`), and every tensor's shape by name, in state-dict order."""

    part: str
    file: str
    repo: str
    naming: str
    shapes: dict[str, tuple[int, ...]] = attrs.field(eq=False)

    @property
    def tensors(self) -> int:
        return len(self.shapes)

    @property
    def parameters(self) -> int:
        return sum(math.prod(shape) for shape in self.shapes.values())


def path(part: str) -> Path:
    if part not in PARTS:
        raise ValueError(f"unknown network {part!r} (expected one of {PARTS})")
    return HERE / f"{part}.json"


def load(part: str) -> Manifest:
    """The committed manifest of one network; its recorded totals must agree with its shapes."""
    data = json.loads(path(part).read_text(encoding="utf-8"))
    manifest = Manifest(
        part=data["part"],
        file=data["file"],
        repo=data["repo"],
        naming=data["naming"],
        shapes={name: tuple(shape) for name, shape in data["shapes"].items()},
    )
    if (manifest.tensors, manifest.parameters) != (data["tensors"], data["parameters"]):
        raise ValueError(f"{path(part)}: the totals do not match the shapes listed (edited by hand?)")
    return manifest
