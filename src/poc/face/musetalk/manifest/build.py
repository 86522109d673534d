"""Write the manifests (see __init__) from our full-size configs, built on torch's meta device.

Run `python -m poc.face.musetalk.manifest.build` only when upstream's layout is known to have
changed: the test that pins the manifests compares them with exactly what this builds, so a
library upgrade that renames a tensor fails that test instead of being written over silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from poc.face.musetalk import _deps, configs
from poc.face.musetalk.manifest import HERE, PARTS, Manifest

# sd-vae-ft-mse (2022) predates diffusers' attention rename; its file keeps the old names.
VAE_OLD_NAMES = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
WHISPER_PREFIX = "model."  # WhisperForConditionalGeneration keeps the WhisperModel under `model`

WHERE = {
    "unet": ("musetalkV15/unet.pth", "TMElyralab/MuseTalk"),
    "vae": ("sd-vae/diffusion_pytorch_model.{safetensors,bin}", "stabilityai/sd-vae-ft-mse"),
    "whisper": ("whisper/{model.safetensors,pytorch_model.bin}", "openai/whisper-tiny"),
}
NAMING = {
    "unet": "current diffusers names (conv_in, attn1.to_q, to_out.0, proj_in, conv_shortcut), no prefix; "
    "a raw torch.save of the state dict of UNet2DConditionModel(**musetalk.json)",
    "vae": "diffusers names, except the mid-block attention's 2022 names query/key/value/proj_attn "
    "(diffusers renames them to to_q/to_k/to_v/to_out.0 on load)",
    "whisper": "transformers' WhisperForConditionalGeneration names: the WhisperModel's under 'model.' "
    "(encoder and decoder); proj_out is tied to the token embedding and not stored",
}


def upstream_name(part: str, name: str) -> str:
    """Our network's state-dict name -> the name in upstream's checkpoint file."""
    if part == "vae":
        for new, old in VAE_OLD_NAMES.items():
            name = name.replace(new, old)
        return name
    if part == "whisper":
        return WHISPER_PREFIX + name
    return name


def network_shapes(part: str) -> dict[str, tuple[int, ...]]:
    """Our full-size network's state dict (names, shapes), built on the meta device: no memory,
    no random init, well under a second per network."""
    torch = _deps.require("torch")
    diffusers = _deps.require("diffusers")
    transformers = _deps.require("transformers")
    with torch.device("meta"):
        if part == "unet":
            model = diffusers.UNet2DConditionModel.from_config(configs.UNET)
        elif part == "vae":
            model = diffusers.AutoencoderKL.from_config(configs.VAE)
        elif part == "whisper":
            cfg = {k: v for k, v in configs.WHISPER.items() if k != "model_type"}
            model = transformers.WhisperModel(transformers.WhisperConfig(**cfg))
        else:
            raise ValueError(f"unknown network {part!r} (expected one of {PARTS})")
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def upstream_shapes(part: str) -> dict[str, tuple[int, ...]]:
    """What upstream's checkpoint of this network holds, by our configs and the naming facts."""
    return {upstream_name(part, name): shape for name, shape in network_shapes(part).items()}


def build(part: str) -> Manifest:
    file, repo = WHERE[part]
    return Manifest(part=part, file=file, repo=repo, naming=NAMING[part], shapes=upstream_shapes(part))


def dumps(manifest: Manifest) -> str:
    """JSON with one tensor per line, so a changed tensor is a one-line diff."""
    head: dict[str, Any] = {
        "part": manifest.part,
        "file": manifest.file,
        "repo": manifest.repo,
        "naming": manifest.naming,
        "tensors": manifest.tensors,
        "parameters": manifest.parameters,
    }
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    rows = [f"    {json.dumps(name)}: {json.dumps(list(shape))}" for name, shape in manifest.shapes.items()]
    return "{\n" + "\n".join(lines) + '\n  "shapes": {\n' + ",\n".join(rows) + "\n  }\n}\n"


def main(folder: Path = HERE) -> None:
    for part in PARTS:
        manifest = build(part)
        (folder / f"{part}.json").write_text(dumps(manifest), encoding="utf-8")
        print(f"{part}: {manifest.tensors} tensors, {manifest.parameters:,} parameters")


if __name__ == "__main__":
    main()
