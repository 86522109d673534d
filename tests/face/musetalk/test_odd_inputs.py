"""MuseTalk's input edges: stream rates with no small ratio to 16 kHz, weight files that are
something else (Git LFS pointers, saved web pages, empty files, pickled models), and a damaged
prepared-avatar cache."""

import argparse
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from poc.face.avatar import Avatar
from poc.face.base import SpeechSlot
from poc.face.musetalk.commands import add_models_parser
from poc.face.musetalk.engine import MuseTalkEngine
from poc.face.musetalk.model import load_vae
from poc.face.musetalk.prepare import prepare_avatar
from poc.face.musetalk.resample import StreamResampler
from poc.face.musetalk.weights import check_weights

from .conftest import voiced
from .on_device import DEVICE


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="poc")
    add_models_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


@pytest.mark.parametrize("rate", [44056, 44101, 15984, 95999, 8004])
def test_an_odd_stream_rate_converts_to_16k_with_bounded_memory(rate: int) -> None:
    # The engine takes any rate (the settings now allow only AAC's); 44101 Hz (a typo) once asked for a filter
    # bank of 16000 x 44195 values, gigabytes, and the MuseTalk engine died building it.
    tracemalloc.start()
    try:
        r = StreamResampler(rate, 16000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20
    seconds = 2
    x = 0.5 * np.sin(2 * np.pi * 440 * np.arange(rate * seconds) / rate)
    r.push(x.astype(np.float32))
    r.flush()
    out = r.output
    made = rate * r.up / r.down  # output samples per second of speech: 16000 but for a rounding
    assert abs(made / 16000 - 1) < 5e-4  # the lips drift from the speech by 30 ms a minute at most
    assert out.size == pytest.approx(made * seconds, abs=1)
    expected = 0.5 * np.sin(2 * np.pi * 440 * np.arange(out.size) / made)
    inner = slice(400, -400)  # the zero-padded edges ring a little
    assert np.abs(out[inner] - expected[inner]).max() < 1e-3


LFS_POINTER = b"version https://git-lfs.github.com/spec/v1\noid sha256:0123abcd\nsize 3400000000\n"
WEB_PAGE = b"<!DOCTYPE html>\n<html><head><title>unet.pth - TMElyralab/MuseTalk</title></head></html>\n"


@pytest.mark.slow  # builds the networks' shapes on torch's meta device
@pytest.mark.parametrize(
    ("file", "content", "said"),
    [
        pytest.param("musetalkV15/unet.pth", LFS_POINTER, "a Git LFS pointer", id="unet-lfs"),
        pytest.param("sd-vae/diffusion_pytorch_model.safetensors", LFS_POINTER, "a Git LFS pointer", id="vae-lfs"),
        pytest.param("whisper/model.safetensors", WEB_PAGE, "a web page", id="whisper-page"),
        pytest.param("musetalkV15/unet.pth", WEB_PAGE, "a web page", id="unet-page"),
        pytest.param("sd-vae/config.json", WEB_PAGE, "a web page", id="vae-config-page"),
        pytest.param("face-parse-bisent/79999_iter.pth", LFS_POINTER, "a Git LFS pointer", id="parser-lfs"),
        pytest.param("whisper/model.safetensors", b"", "the file is empty", id="whisper-empty"),
    ],
)
def test_models_check_says_what_a_wrong_weight_file_is(
    models_copy: Path, file: str, content: bytes, said: str, capsys: pytest.CaptureFixture
) -> None:
    # A clone without git-lfs leaves pointers; saving the hub's page of a file leaves HTML. The
    # readers' own words called these "truncated or damaged", and torch's advised loading the
    # file with its safety check off.
    path = models_copy / file
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    args = parse(["models", "check", "--models-dir", str(models_copy)])
    assert args.func(args) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"corrupt {path}: {said}")
    assert "weights_only" not in line and "truncated" not in line


@pytest.mark.slow
def test_a_whole_pickled_model_is_refused_without_advice_to_load_it_unsafely(models_copy: Path) -> None:
    path = models_copy / "musetalkV15/unet.pth"
    torch.save(torch.nn.Linear(2, 2), path)  # a model object, not a state dict of tensors
    (line,) = check_weights(models_copy)
    assert line.startswith(f"corrupt {path}: cannot read it as a torch checkpoint (not a plain checkpoint of tensors")
    assert "torch.nn.modules.linear.Linear" in line and "weights_only" not in line


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _emptied(path: Path) -> None:  # what a power cut soon after the rename can leave (no fsync)
    path.write_bytes(b"")


@pytest.mark.slow  # runs the tiny VAE
@pytest.mark.parametrize(
    ("name", "damage"),
    [
        pytest.param("prepared.npz", _truncated, id="npz-truncated"),
        pytest.param("prepared.npz", _emptied, id="npz-empty"),
        pytest.param("meta.json", lambda path: path.write_text("[]"), id="meta-not-an-object"),
    ],
)
def test_a_damaged_avatar_cache_is_prepared_again_not_fatal(
    tiny_models: Path, avatar_still: Avatar, tmp_path: Path, name: str, damage
) -> None:
    # The engine is built with the stream on air; an exception other than EngineError from it
    # takes the service down, on every restart, until someone deletes the cache by hand.
    codec = load_vae(tiny_models, DEVICE)
    first = prepare_avatar(avatar_still, codec.encode_reference, tmp_path, vae_id="a")
    damage(tmp_path / first.key / name)
    again = prepare_avatar(avatar_still, codec.encode_reference, tmp_path, vae_id="a")
    assert not again.from_cache
    np.testing.assert_allclose(again.latents, first.latents, atol=1e-5)
    assert prepare_avatar(avatar_still, codec.encode_reference, tmp_path, vae_id="a").from_cache  # healed


@pytest.mark.slow  # runs the tiny networks
def test_the_engine_starts_and_talks_at_an_odd_stream_rate(tiny_models: Path, avatar_still: Avatar, tmp_path: Path) -> None:
    rate, fps = 44101, 25
    engine = MuseTalkEngine(avatar_still, tiny_models, DEVICE, 4, fps, rate, cache_dir=tmp_path)
    try:
        audio = voiced(rate, rate)
        slots = [SpeechSlot(i, audio[i * rate // fps : (i + 1) * rate // fps]) for i in range(fps)]
        utterance = engine.start_utterance()
        frames = utterance.feed(slots) + utterance.finish()
        assert [f.index for f in frames] == list(range(fps))
        assert all(f.patch is not None for f in frames) and utterance.failures == 0
    finally:
        engine.close()
