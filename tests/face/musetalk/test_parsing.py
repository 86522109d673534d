"""Face parsing (BiSeNet, optional): upstream's jaw mask, its weights, and its use in preparation.

The real network is loaded from random weights written in the published file's layout (the real
file cannot be downloaded here), so it parses nothing meaningful; what the mask does with a parse
is tested with a drawn label map instead, through the same code after the network.
"""

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from poc.face.avatar import Avatar
from poc.face.base import EngineError
from poc.face.landmarks import detect_landmarks
from poc.face.musetalk.engine import MuseTalkEngine
from poc.face.musetalk.geometry import face_box, feather_kernel, frame_geometry
from poc.face.musetalk.model import VaeCodec, load_vae
from poc.face.musetalk.parsing import (
    LOWER_LIP,
    MOUTH,
    NOSE,
    PARSE_SIZE,
    SKIN,
    UPPER_LIP,
    FaceParser,
    cut_square,
    jaw_kernel,
    jaw_region,
    load_parser,
    parsed_region,
    parsing_square,
)
from poc.face.musetalk.prepare import prepare_avatar
from poc.face.musetalk.weights import check_weights, optional_notes

from .conftest import write_parser_weights
from .on_device import DEVICE

# Builds and runs MuseTalk's networks on the CPU: left out of the fast lane (README, Tests).
pytestmark = pytest.mark.slow

HAIR = 17


def drawn_face() -> np.ndarray:
    """A 512x512 label map laid out like a parsed face crop: hair, skin, nose, lips, mouth."""
    labels = np.zeros((PARSE_SIZE, PARSE_SIZE), np.uint8)
    labels[:110] = HAIR
    cv2.ellipse(labels, (256, 280), (140, 180), 0, 0, 360, SKIN, -1)
    cv2.ellipse(labels, (256, 290), (25, 40), 0, 0, 360, NOSE, -1)
    cv2.ellipse(labels, (256, 378), (50, 10), 0, 0, 360, UPPER_LIP, -1)
    cv2.ellipse(labels, (256, 402), (50, 12), 0, 0, 360, LOWER_LIP, -1)
    cv2.ellipse(labels, (256, 390), (40, 4), 0, 0, 360, MOUTH, -1)
    return labels


class DrawnParser(FaceParser):
    """A controllable parser: every square gets the same label map (no network)."""

    def __init__(self, labels: np.ndarray, fingerprint: str = "drawn") -> None:
        self._labels, self.fingerprint = labels, fingerprint

    def labels(self, squares_bgr, batch: int = 8) -> list[np.ndarray]:
        return [self._labels.copy() for _ in squares_bgr]


@pytest.fixture(scope="module")
def codec(tiny_models: Path) -> VaeCodec:
    return load_vae(tiny_models, DEVICE)


def test_the_jaw_kernel_grows_skin_16_px_up_and_a_6_px_point_down() -> None:
    skin = np.zeros((64, 64), np.uint8)
    skin[30, 32] = 255
    grown = cv2.dilate(skin, jaw_kernel())
    rows, cols = np.nonzero(grown)
    assert (rows.min() - 30, rows.max() - 30) == (-16, 6)
    assert (cols.min() - 32, cols.max() - 32) == (-10, 10)
    assert np.flatnonzero(grown[30 + 6]).tolist() == [32]  # the point's tip: one pixel wide
    assert np.count_nonzero(grown[30 - 16]) == 21  # the bar


def test_the_jaw_keeps_skin_and_lips_and_drops_nose_hair_and_background() -> None:
    labels = drawn_face()
    mask = jaw_region(labels)
    assert set(np.unique(mask)) == {0, 255}
    assert mask[290, 256] == 0  # nose
    assert mask[378, 256] == mask[402, 256] == mask[390, 256] == 255  # lips and mouth
    assert mask[440, 256] == 255 and mask[250, 180] == 255  # chin and cheek skin
    assert mask[50, 256] == 0 and mask[500, 20] == 0  # hair, background


def test_the_region_is_thinner_in_the_cheek_bands_than_in_the_centre() -> None:
    labels = np.zeros((PARSE_SIZE, PARSE_SIZE), np.uint8)
    labels[200:300] = SKIN  # a band of skin across the whole width
    mask = jaw_region(labels)
    centre, cheek = np.flatnonzero(mask[:, 256]), np.flatnonzero(mask[:, 60])
    assert (centre.min(), centre.max()) == (200 - 16, 299 + 6)  # dilated only
    assert cheek.min() > centre.min() and cheek.max() < centre.max()  # dilated, then eroded


def test_the_square_is_1_5_times_the_box_and_black_off_the_frame() -> None:
    box = (10, 20, 110, 140)  # 100 x 120, centre (60, 80)
    square = parsing_square(box)
    assert square == (60 - 90, 80 - 90, 60 + 90, 80 + 90)
    frame = np.full((200, 300, 3), 77, np.uint8)
    cut = cut_square(frame, square)
    assert cut.shape == (180, 180, 3)
    assert (cut[:, :30] == 0).all() and (cut[:10] == 0).all()  # left of and above the frame
    assert (cut[10:, 30:] == 77).all()


def test_the_parsed_region_covers_the_box_below_its_centre_only(avatar_still: Avatar) -> None:
    frame = avatar_still.frames[0]
    box = face_box(detect_landmarks(frame), *avatar_still.size)
    region = parsed_region(frame, box, drawn_face())
    x1, y1, x2, y2 = box
    square = parsing_square(box)
    assert region.shape == (y2 - y1, x2 - x1)
    centre_row = (square[1] + square[3]) // 2 - y1
    assert not region[:centre_row].any() and region[centre_row:].any()


def test_random_weights_in_the_published_layout_load_and_parse(tiny_models_with_parser: Path, avatar_still: Avatar) -> None:
    assert check_weights(tiny_models_with_parser) == [] and optional_notes(tiny_models_with_parser) == []
    parser = load_parser(tiny_models_with_parser, DEVICE)
    assert parser is not None
    state = torch.load(tiny_models_with_parser / "face-parse-bisent/79999_iter.pth", weights_only=True)
    loaded = parser.net.state_dict()
    assert set(loaded) == set(state)
    assert torch.equal(loaded["cp.resnet.layer2.0.downsample.0.weight"], state["cp.resnet.layer2.0.downsample.0.weight"])
    # 13.3 M float32 parameters: the published 79999_iter.pth is about 53 MB
    assert 13.2e6 < sum(p.numel() for p in parser.net.parameters()) < 13.4e6
    frame = avatar_still.frames[0]
    box = face_box(detect_landmarks(frame), *avatar_still.size)
    (labels,) = parser.labels([cut_square(frame, parsing_square(box))])
    assert labels.shape == (PARSE_SIZE, PARSE_SIZE) and labels.dtype == np.uint8 and labels.max() < 19


def test_a_checkpoint_without_batch_norm_step_counters_loads(tmp_path: Path) -> None:
    write_parser_weights(tmp_path, drop_step_counters=True)
    assert check_weights(tmp_path, ("parser",)) == []
    parser = load_parser(tmp_path, DEVICE)
    assert parser is not None and not any(b.is_meta for b in parser.net.buffers())


def test_a_truncated_parser_file_is_corrupt_and_refused(tmp_path: Path) -> None:
    path = write_parser_weights(tmp_path)
    path.write_bytes(path.read_bytes()[:4096])
    (line,) = check_weights(tmp_path, ("parser",))
    assert line.startswith(f"corrupt {path}") and "vivym/face-parsing-bisenet" in line and "\n" not in line
    with pytest.raises(EngineError, match="corrupt .*79999_iter.pth"):
        load_parser(tmp_path, DEVICE)


def test_a_checkpoint_of_another_network_is_corrupt(tmp_path: Path) -> None:
    from poc.face.musetalk.bisenet import FaceParsingNet

    path = tmp_path / "face-parse-bisent/79999_iter.pth"
    path.parent.mkdir()
    torch.save(FaceParsingNet(classes=11).state_dict(), path)  # another label set
    (line,) = check_weights(tmp_path, ("parser",))
    assert line.startswith(f"corrupt {path}") and "other shapes" in line and "conv_out.conv_out.weight" in line


def test_without_the_parser_weights_the_layout_is_complete_with_a_note(tiny_models: Path) -> None:
    assert check_weights(tiny_models) == []
    assert load_parser(tiny_models, DEVICE) is None
    (note,) = optional_notes(tiny_models)
    assert note.startswith("optional: ") and "face-parse-bisent/79999_iter.pth" in note and "landmarks" in note


def test_a_parser_changes_the_mask_and_the_cache_follows_it(codec: VaeCodec, avatar_still: Avatar, tmp_path: Path) -> None:
    plain = prepare_avatar(avatar_still, codec.encode_reference, tmp_path, vae_id="a")
    parsed = prepare_avatar(avatar_still, codec.encode_reference, tmp_path, vae_id="a", parser=DrawnParser(drawn_face()))
    assert not parsed.from_cache  # the masks depend on the parser: rebuilt
    g, p = plain.geometry[0], parsed.geometry[0]
    assert p.box == g.box and p.paste != g.paste
    x1, y1, x2, y2 = p.box
    square = parsing_square(p.box)
    # the region stops at the square's centre row; only upstream's feather reaches above it
    assert p.paste[1] >= (square[1] + square[3]) // 2 - feather_kernel(p.box) // 2
    over_box = np.zeros((y2 - y1, x2 - x1), np.float32)
    px, py, pw, ph = p.paste
    over_box[py - y1 : py - y1 + ph, px - x1 : px - x1 + pw] = p.mask
    assert over_box.max() > 0.99  # fully the new face inside
    assert not over_box[0].any()  # the box's top row is the body's
    meta = json.loads((tmp_path / parsed.key / "meta.json").read_text())
    assert meta["mask"] == "parsed:drawn"
    assert (plain.parsed_frames, parsed.parsed_frames) == (0, 1)
    again = prepare_avatar(avatar_still, codec.encode_reference, tmp_path, vae_id="a", parser=DrawnParser(drawn_face()))
    assert again.from_cache and again.geometry[0].paste == p.paste and again.parsed_frames == 1
    other = prepare_avatar(avatar_still, codec.encode_reference, tmp_path, vae_id="a", parser=DrawnParser(drawn_face(), "v2"))
    assert not other.from_cache


def test_a_parse_without_skin_falls_back_to_the_landmark_mask(
    codec: VaeCodec, avatar_still: Avatar, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = DrawnParser(np.zeros((PARSE_SIZE, PARSE_SIZE), np.uint8))
    with caplog.at_level(logging.WARNING):
        prepared = prepare_avatar(avatar_still, codec.encode_reference, tmp_path, vae_id="a", parser=empty)
    landmarks = detect_landmarks(avatar_still.frames[0])
    expected = frame_geometry(landmarks, *avatar_still.size)
    assert prepared.geometry[0].paste == expected.paste and prepared.parsed_frames == 0
    assert "no jaw in 1 of 1" in caplog.text


def test_the_engine_prepares_with_the_parser_when_its_weights_exist(
    tiny_models_with_parser: Path, avatar_still: Avatar, tmp_path: Path
) -> None:
    engine = MuseTalkEngine(avatar_still, tiny_models_with_parser, DEVICE, 4, 25, 48000, cache_dir=tmp_path)
    meta = json.loads((tmp_path / engine.prepared.key / "meta.json").read_text())
    assert meta["mask"].startswith("parsed:")
    engine.close()
