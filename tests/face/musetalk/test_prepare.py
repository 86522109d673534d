"""Prepared avatars: built once, reused from the disk cache, rebuilt when their inputs change."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from poc.face.avatar import Avatar, load_avatar
from poc.face.base import EngineError
from poc.face.musetalk.model import VaeCodec, load_vae
from poc.face.musetalk.prepare import prepare_avatar, vae_fingerprint
from poc.paths import DEFAULT_AVATAR

from .conftest import SIZE
from .on_device import DEVICE

# Builds and runs MuseTalk's networks on the CPU: left out of the fast lane (README, Tests).
pytestmark = pytest.mark.slow


class CountingEncoder:
    """The real VAE encoder, counting how many crops it was asked to encode."""

    def __init__(self, codec: VaeCodec) -> None:
        self.codec, self.crops = codec, 0

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        self.crops += len(crops)
        return self.codec.encode_reference(crops)


@pytest.fixture(scope="module")
def codec(tiny_models: Path) -> VaeCodec:
    return load_vae(tiny_models, DEVICE)


def test_a_still_is_prepared_then_reused_from_the_cache(codec: VaeCodec, avatar_still: Avatar, tmp_path: Path) -> None:
    encode = CountingEncoder(codec)
    first = prepare_avatar(avatar_still, encode, tmp_path, vae_id="a")
    assert not first.from_cache and encode.crops == 1
    assert first.latents.shape == (1, 8, 32, 32) and len(first.geometry) == 1
    x1, y1, x2, y2 = first.geometry[0].box
    assert 0 <= x1 < x2 <= SIZE[0] and 0 <= y1 < y2 <= SIZE[1]

    again = prepare_avatar(avatar_still, encode, tmp_path, vae_id="a")
    assert again.from_cache and encode.crops == 1  # nothing recomputed
    np.testing.assert_array_equal(again.latents, first.latents)
    assert again.geometry[0].box == first.geometry[0].box and again.geometry[0].paste == first.geometry[0].paste
    np.testing.assert_allclose(again.geometry[0].mask, first.geometry[0].mask, atol=1 / 255)


def test_a_changed_source_is_prepared_afresh(codec: VaeCodec, tmp_path: Path) -> None:
    source = tmp_path / "face.png"
    shutil.copy(DEFAULT_AVATAR, source)
    encode = CountingEncoder(codec)
    before = prepare_avatar(load_avatar(source, *SIZE), encode, tmp_path / "cache", vae_id="a")
    image = cv2.imread(str(source))
    cv2.imwrite(str(source), cv2.convertScaleAbs(image, alpha=0.9))  # same face, darker
    after = prepare_avatar(load_avatar(source, *SIZE), encode, tmp_path / "cache", vae_id="a")
    assert not after.from_cache and after.key != before.key and encode.crops == 2
    assert not np.allclose(after.latents, before.latents)


def test_another_vae_or_size_rebuilds(codec: VaeCodec, avatar_still: Avatar, tmp_path: Path) -> None:
    encode = CountingEncoder(codec)
    prepare_avatar(avatar_still, encode, tmp_path, vae_id="a")
    assert not prepare_avatar(avatar_still, encode, tmp_path, vae_id="b").from_cache
    bigger = load_avatar(DEFAULT_AVATAR, 480, 270)
    assert not prepare_avatar(bigger, encode, tmp_path, vae_id="b").from_cache
    assert encode.crops == 3


def test_a_damaged_cache_is_rebuilt(codec: VaeCodec, avatar_still: Avatar, tmp_path: Path) -> None:
    encode = CountingEncoder(codec)
    first = prepare_avatar(avatar_still, encode, tmp_path, vae_id="a")
    (tmp_path / first.key / "prepared.npz").write_bytes(b"garbage")
    again = prepare_avatar(avatar_still, encode, tmp_path, vae_id="a")
    assert not again.from_cache and encode.crops == 2


def test_every_video_frame_gets_its_own_box_and_latent(codec: VaeCodec, avatar_video: Avatar, tmp_path: Path) -> None:
    prepared = prepare_avatar(avatar_video, codec.encode_reference, tmp_path)
    assert prepared.latents.shape == (3, 8, 32, 32)
    xs = [g.box[0] for g in prepared.geometry]
    assert xs[0] < xs[1] < xs[2]  # the portrait drifts right, so does its box


def test_an_avatar_without_a_face_is_refused(codec: VaeCodec, tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((180, 320, 3), 128, np.uint8))
    with pytest.raises(EngineError, match="no face"):
        prepare_avatar(load_avatar(blank, *SIZE), codec.encode_reference, tmp_path)


def test_the_vae_fingerprint_follows_the_weights(models_copy: Path) -> None:
    before = vae_fingerprint(models_copy)
    path = models_copy / "sd-vae/diffusion_pytorch_model.safetensors"
    path.write_bytes(path.read_bytes() + b"\0")
    assert vae_fingerprint(models_copy) != before
