"""Weight checks: the real layout passes; each missing or corrupt file is named with its fix."""

import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from poc.face.avatar import Avatar
from poc.face.base import EngineError
from poc.face.musetalk.engine import MuseTalkEngine
from poc.face.musetalk.model import load_model, load_vae
from poc.face.musetalk.weights import FILES, check_weights, fetch_weights, optional_notes

from .conftest import write_tiny_weights
from .on_device import DEVICE

# Builds and runs MuseTalk's networks on the CPU: left out of the fast lane (README, Tests).
pytestmark = pytest.mark.slow


def test_the_tiny_layout_is_complete(tiny_models: Path) -> None:
    assert check_weights(tiny_models) == []


def test_bin_checkpoints_are_accepted_and_load(tmp_path: Path) -> None:
    models = write_tiny_weights(tmp_path / "models", vae_format="bin", whisper_format="bin")
    assert not (models / "whisper/model.safetensors").exists()
    assert check_weights(models) == []
    model = load_model(models, DEVICE)
    assert model.window_steps == 150


@pytest.mark.parametrize("file", FILES, ids=lambda f: f.path)
def test_a_missing_file_is_named_with_where_to_get_it(models_copy: Path, file) -> None:
    for rel, _ in file.candidates():
        (models_copy / rel).unlink(missing_ok=True)
    problems = check_weights(models_copy)
    assert len(problems) == 1, problems
    line = problems[0]
    assert line.startswith(f"missing {models_copy / file.path}")
    assert f"huggingface.co/{file.repo}" in line
    assert "\n" not in line


def test_a_truncated_unet_is_corrupt(models_copy: Path) -> None:
    path = models_copy / "musetalkV15/unet.pth"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    (line,) = check_weights(models_copy)
    assert line.startswith(f"corrupt {path}") and "truncated" in line and "TMElyralab/MuseTalk" in line


def test_a_truncated_safetensors_file_is_corrupt(models_copy: Path) -> None:
    path = models_copy / "whisper/model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    (line,) = check_weights(models_copy)
    assert line.startswith(f"corrupt {path}") and "openai/whisper-tiny" in line


def test_unreadable_json_is_corrupt(models_copy: Path) -> None:
    path = models_copy / "sd-vae/config.json"
    path.write_text("{not json")
    (line,) = check_weights(models_copy)
    assert line.startswith(f"corrupt {path}: unreadable JSON")


def test_a_unet_that_does_not_fit_its_config_is_corrupt(models_copy: Path) -> None:
    cfg = json.loads((models_copy / "musetalkV15/musetalk.json").read_text())
    cfg["block_out_channels"] = [32, 32, 64, 64]
    (models_copy / "musetalkV15/musetalk.json").write_text(json.dumps(cfg))
    (line,) = check_weights(models_copy)
    assert line.startswith(f"corrupt {models_copy / 'musetalkV15/unet.pth'}: does not match musetalkV15/musetalk.json")
    assert "other shapes" in line


def test_a_whisper_checkpoint_missing_an_encoder_tensor_is_corrupt(tmp_path: Path) -> None:
    models = write_tiny_weights(tmp_path / "models", whisper_format="bin")
    path = models / "whisper/pytorch_model.bin"
    state = torch.load(path, weights_only=True)
    del state["model.encoder.layers.3.fc1.weight"]
    torch.save(state, path)
    (line,) = check_weights(models)
    assert line.startswith(f"corrupt {path}") and "encoder.layers.3.fc1.weight" in line


def test_a_config_of_another_model_is_refused(models_copy: Path) -> None:
    path = models_copy / "musetalkV15/musetalk.json"
    cfg = json.loads(path.read_text())
    cfg["in_channels"] = 4  # a plain SD UNet, not MuseTalk's 8-channel one
    path.write_text(json.dumps(cfg))
    (line,) = check_weights(models_copy)
    assert line.startswith(f"corrupt {path}") and "in_channels is 4, MuseTalk needs 8" in line


def test_old_vae_attention_names_are_accepted_and_loaded(tmp_path: Path) -> None:
    """sd-vae-ft-mse dates from 2022 and names its attention query/key/value/proj_attn."""
    models = write_tiny_weights(tmp_path / "models", vae_format="bin")
    path = models / "sd-vae/diffusion_pytorch_model.bin"
    state = torch.load(path, weights_only=True)
    renames = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    old = {}
    for k, v in state.items():
        for new_name, old_name in renames.items():
            k = k.replace(new_name, old_name)
        old[k] = v
    assert any(".proj_attn." in k for k in old)
    torch.save(old, path)
    assert check_weights(models) == []
    codec = load_vae(models, DEVICE)
    loaded = codec.vae.state_dict()
    key = next(k for k in state if ".to_out.0.weight" in k)
    assert torch.equal(loaded[key], state[key])


def test_fetch_fails_fast_with_one_line_per_missing_file(models_copy: Path) -> None:
    shutil.rmtree(models_copy / "whisper")
    (models_copy / "musetalkV15/unet.pth").unlink()
    t0 = time.perf_counter()
    problems = fetch_weights(models_copy, endpoint="http://127.0.0.1:9", timeout=2)
    assert time.perf_counter() - t0 < 5
    assert len(problems) == 5  # unet.pth + the three whisper files + the optional face parser
    assert all("unreachable" in p and "\n" not in p for p in problems)
    assert any("musetalkV15/unet.pth" in p and "TMElyralab/MuseTalk" in p for p in problems)
    assert any("preprocessor_config.json" in p and "openai/whisper-tiny" in p for p in problems)
    (parser,) = [p for p in problems if "79999_iter.pth" in p]
    assert "optional" in parser and "landmarks" in parser and "154JgKpzCPW82qINcVieuPH3fZ2e0P812" in parser


def test_fetch_with_nothing_missing_needs_no_network(tiny_models_with_parser: Path) -> None:
    assert fetch_weights(tiny_models_with_parser, endpoint="http://127.0.0.1:9", timeout=1) == []


def test_the_engine_refuses_to_start_on_a_missing_file(models_copy: Path, avatar_still: Avatar, tmp_path: Path) -> None:
    (models_copy / "whisper/preprocessor_config.json").unlink()
    with pytest.raises(EngineError, match="missing .*whisper/preprocessor_config.json"):
        MuseTalkEngine(avatar_still, models_copy, DEVICE, 4, 25, 48000, cache_dir=tmp_path / "cache")


def test_fetch_puts_every_file_where_the_check_looks(
    tiny_models_with_parser: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in hub serving the tiny files by repo and repo path; the real hub is unreachable here."""
    import socket

    import huggingface_hub

    tiny_models = tiny_models_with_parser
    hub_dirs = {"TMElyralab/MuseTalk": tiny_models, "stabilityai/sd-vae-ft-mse": tiny_models / "sd-vae",
                "openai/whisper-tiny": tiny_models / "whisper",
                "vivym/face-parsing-bisenet": tiny_models / "face-parse-bisent"}
    asked = []

    def fake_download(repo_id: str, filename: str, *, local_dir: Path, **kwargs) -> str:
        asked.append((repo_id, filename))
        source = hub_dirs[repo_id] / filename
        if not source.is_file():
            raise FileNotFoundError(f"404 {repo_id}/{filename}")
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
        return str(target)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    with socket.create_server(("127.0.0.1", 0)) as server:  # the probe only needs a listening port
        models = tmp_path / "models"
        problems = fetch_weights(models, endpoint=f"http://127.0.0.1:{server.getsockname()[1]}")
    assert problems == []
    assert check_weights(models) == [] and optional_notes(models) == []
    assert ("stabilityai/sd-vae-ft-mse", "diffusion_pytorch_model.safetensors") in asked
    assert ("vivym/face-parsing-bisenet", "79999_iter.pth") in asked
    assert ("TMElyralab/MuseTalk", "musetalkV15/unet.pth") in asked


def test_a_preprocessor_that_does_not_fit_the_encoder_is_refused(models_copy: Path) -> None:
    path = models_copy / "whisper/preprocessor_config.json"
    cfg = json.loads(path.read_text())
    cfg.update(chunk_length=30, n_samples=480000, nb_max_frames=3000)  # the 30-s window, tiny encoder has 3 s
    path.write_text(json.dumps(cfg))
    (line,) = check_weights(models_copy)
    assert line.startswith(f"corrupt {path}") and "3000 mel frames" in line and "needs 300" in line
