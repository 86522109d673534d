"""Crop box by the v1.5 rule, the feathered lower-face mask, and the blend back."""

import numpy as np
import pytest

from poc.face.avatar import load_avatar
from poc.face.landmarks import detect_landmarks
from poc.face.musetalk.geometry import (
    EXTRA_MARGIN,
    FaceGeometryError,
    blend_face,
    crop_face,
    face_box,
    feathered,
    frame_geometry,
    landmark_region,
)
from poc.paths import DEFAULT_AVATAR


@pytest.fixture(scope="module")
def portrait() -> tuple[np.ndarray, np.ndarray]:
    frame = load_avatar(DEFAULT_AVATAR, 640, 360).frames[0]
    return frame, detect_landmarks(frame)


def test_box_is_centred_on_the_nose_bridge_with_the_chin_margin(portrait) -> None:
    frame, lm = portrait
    x1, y1, x2, y2 = face_box(lm, 640, 360)
    lm = np.round(lm)
    chin, nose = lm[:, 1].max(), lm[29, 1]
    assert (x1, x2) == (lm[:, 0].min(), lm[:, 0].max())
    assert y2 == chin + EXTRA_MARGIN
    assert y1 == nose - (chin - nose)


def test_box_is_clipped_to_the_frame() -> None:
    lm = np.zeros((68, 2))
    lm[:, 0] = np.linspace(-20, 80, 68)
    lm[:, 1] = np.linspace(10, 95, 68)
    lm[29] = (30, 40)
    assert face_box(lm, 100, 100) == (0, 0, 80, 100)  # top: 40 - 55 < 0; bottom: 95 + 10 > 100


def test_tiny_or_offscreen_faces_are_refused() -> None:
    lm = np.tile([[50.0, 50.0]], (68, 1)) + np.random.default_rng(0).uniform(0, 5, (68, 2))
    with pytest.raises(FaceGeometryError):
        face_box(lm, 100, 100)


def test_mask_covers_the_mouth_and_chin_but_not_eyes_or_nose(portrait) -> None:
    frame, lm = portrait
    box = face_box(lm, 640, 360)
    mask = feathered(landmark_region(lm, box))
    x1, y1, x2, y2 = box
    assert mask.shape == (y2 - y1, x2 - x1)

    def at(point: int) -> float:
        x, y = np.round(lm[point] - (x1, y1)).astype(int)
        return float(mask[y, x])

    # between the lips (the nose cut-out's feather may take a grey level off the upper lip)
    assert at(66) >= 0.99 and at(62) >= 0.99
    assert at(57) == pytest.approx(1.0)  # under the lower lip
    assert at(36) == 0 and at(45) == 0  # eye corners
    assert at(30) < 0.1  # the nose tip keeps the body's pixels (only the feather's tail reaches it)
    assert mask[0].max() == 0  # nothing above the box's centre row, so the box's top row is the body
    assert at(8) >= 0.5  # the chin: the rule's region reaches a little below it
    assert 0 < mask[mask > 0].min() < 0.5  # feathered, not a hard cut


def test_a_region_meeting_the_box_edge_is_about_half_strength_there() -> None:
    # upstream cuts the region at the box and then blurs, so beyond the box counts as background
    hard = np.zeros((120, 80), np.uint8)
    hard[60:] = 255
    mask = feathered(hard)
    assert mask[-1, 40] == pytest.approx(0.5, abs=0.1)
    assert mask[90, 40] == pytest.approx(1.0)


def test_blend_is_the_body_where_alpha_is_0_and_the_face_where_it_is_1(portrait) -> None:
    frame, lm = portrait
    g = frame_geometry(lm, 640, 360)
    face = np.full((256, 256, 3), 200, np.uint8)
    x, y, pixels = blend_face(frame, face, g)
    assert (x, y, pixels.shape[1], pixels.shape[0]) == g.paste
    px, py, pw, ph = g.paste
    body = frame[py : py + ph, px : px + pw]
    zero, one = g.mask == 0, g.mask >= 0.999
    assert zero.any() and one.any()
    np.testing.assert_array_equal(pixels[zero], body[zero])
    assert np.abs(pixels[one].astype(int) - 200).max() <= 1
    bx1, by1, bx2, by2 = g.box
    assert bx1 <= px and by1 <= py and px + pw <= bx2 and py + ph <= by2


def test_crop_is_256_square(portrait) -> None:
    frame, lm = portrait
    crop = crop_face(frame, face_box(lm, 640, 360))
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
