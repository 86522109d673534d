"""Where the face is cut out of a body frame and how the new lower face is blended back.

Crop box (MuseTalk v1.5 rule, 68-point landmarks, 0-based): left/right at the landmarks' extreme
x, bottom at the lowest landmark (the chin) plus a 10-px margin so an opening jaw has room, top
as far above the nose-bridge point 29 as the chin is below it. The box is thus centred on the
nose bridge, and the model's masked lower half is everything below it. Crops are squashed to
256x256, whatever the box's aspect.

Blend mask (upstream's v1.5 rule): a hard region over the box, Gaussian-feathered with a kernel of
int(0.1 * square_width // 2 * 2) + 1 px, where the square is the face-parsing square around the box
(parsing.parsing_square: 1.5x the box's larger side), and not shrunk first. Outside the box counts
as background, as upstream cuts its region at the box before blurring; so where the region meets
the box's edge the alpha is about one half there, a step upstream has too. The region is
upstream's parsed jaw when the face-parsing weights exist (parsing.py); otherwise it is drawn from
the landmarks: the polygon under the nose base (points 31-35) down along the jaw (points 2-14),
the jaw line pushed down by the same 10-px margin.
"""

from __future__ import annotations

import attrs
import cv2
import numpy as np

from poc.face.musetalk.parsing import parsing_square

EXTRA_MARGIN = 10  # v1.5: pixels added below the chin
BBOX_SHIFT = 0  # v1.5 fixes the nose-point shift at 0
FEATHER = 0.1  # Gaussian feather kernel, as a fraction of the parsing square's side
MIN_BOX = 16  # a smaller face cannot be animated meaningfully
NOSE_BRIDGE = 29
JAW = list(range(2, 15))  # jaw contour from below the left cheekbone round the chin
NOSE_BASE = [35, 34, 33, 32, 31]  # right to left, closing the polygon under the nose


class FaceGeometryError(ValueError):
    """The landmarks do not give a usable face box (face too small, or off the frame)."""


@attrs.frozen
class FrameGeometry:
    """Per body frame: the crop box (x1, y1, x2, y2; x2/y2 exclusive) and the paste region
    (x, y, w, h) with its alpha mask (float32 h x w in [0, 1]); paste lies inside the box."""

    box: tuple[int, int, int, int]
    paste: tuple[int, int, int, int]
    mask: np.ndarray = attrs.field(eq=False)


def face_box(landmarks: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """The v1.5 crop box for (68, 2) landmarks on a width x height frame."""
    lm = np.round(np.asarray(landmarks, np.float64)).astype(np.int64)
    if lm.shape != (68, 2):
        raise FaceGeometryError(f"expected (68, 2) landmarks, got {lm.shape}")
    mid = int(lm[NOSE_BRIDGE, 1]) + BBOX_SHIFT
    y2 = int(lm[:, 1].max())
    y1 = max(0, mid - (y2 - mid))
    x1, x2 = max(0, int(lm[:, 0].min())), min(width, int(lm[:, 0].max()))
    y2 = min(y2 + EXTRA_MARGIN, height)
    if x2 - x1 < MIN_BOX or y2 - y1 < MIN_BOX:
        raise FaceGeometryError(
            f"face box {x2 - x1}x{y2 - y1} px at ({x1},{y1}) is too small or off the frame (need {MIN_BOX}+ px)"
        )
    return x1, y1, x2, y2


def landmark_region(landmarks: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Hard uint8 mask (box height x width, 255 inside) under the nose and down along the jaw."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    pts = np.asarray(landmarks, np.float64) - (x1, y1)
    jaw = pts[JAW].copy()
    jaw[:, 1] += EXTRA_MARGIN
    polygon = np.concatenate([jaw, pts[NOSE_BASE]])
    polygon = np.clip(np.round(polygon), 0, (w - 1, h - 1)).astype(np.int32)
    hard = np.zeros((h, w), np.uint8)
    cv2.fillPoly(hard, [polygon], 255)
    return hard


def feather_kernel(box: tuple[int, int, int, int]) -> int:
    """Upstream's odd Gaussian kernel size for this box: a tenth of the parsing square's side."""
    sx1, _, sx2, _ = parsing_square(box)
    return int(FEATHER * (sx2 - sx1) // 2 * 2) + 1


def feathered(hard: np.ndarray) -> np.ndarray:
    """A hard 0/255 region over the box -> float32 alpha in [0, 1], blurred by upstream's kernel
    with nothing but background beyond the box's edges."""
    h, w = hard.shape
    k = feather_kernel((0, 0, w, h))
    soft = cv2.GaussianBlur(hard, (k, k), 0, borderType=cv2.BORDER_CONSTANT)
    return soft.astype(np.float32) / 255.0


def frame_geometry(landmarks: np.ndarray, width: int, height: int, region: np.ndarray | None = None) -> FrameGeometry:
    """Box, mask and the tight paste region (where the mask is non-zero) for one body frame.

    region: a hard 0/255 mask over the box to feather (the parsed jaw); None draws it from the
    landmarks."""
    box = face_box(landmarks, width, height)
    if region is None:
        region = landmark_region(landmarks, box)
    elif region.shape != (box[3] - box[1], box[2] - box[0]):
        raise ValueError(f"region {region.shape} does not cover the face box {box}")
    mask = feathered(region)
    nz = cv2.findNonZero((mask > 0).astype(np.uint8))
    if nz is None:
        raise FaceGeometryError("the lower-face mask is empty (no jaw in the region)")
    px, py, pw, ph = cv2.boundingRect(nz)
    mask = np.ascontiguousarray(mask[py : py + ph, px : px + pw])
    return FrameGeometry(box=box, paste=(box[0] + px, box[1] + py, pw, ph), mask=mask)


def crop_face(frame: np.ndarray, box: tuple[int, int, int, int], size: int = 256) -> np.ndarray:
    """The box's pixels squashed to size x size with Lanczos (upstream's choice)."""
    x1, y1, x2, y2 = box
    return cv2.resize(frame[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_LANCZOS4)


def blend_face(body: np.ndarray, face: np.ndarray, geometry: FrameGeometry) -> tuple[int, int, np.ndarray]:
    """Resize the generated 256x256 face to the box and alpha-blend it over the body frame
    inside the paste region; returns (x, y, pixels) of that region (uint8 BGR)."""
    x1, y1, x2, y2 = geometry.box
    w, h = x2 - x1, y2 - y1
    interp = cv2.INTER_AREA if w < face.shape[1] and h < face.shape[0] else cv2.INTER_LINEAR
    resized = cv2.resize(face, (w, h), interpolation=interp)
    px, py, pw, ph = geometry.paste
    new = resized[py - y1 : py - y1 + ph, px - x1 : px - x1 + pw]
    old = body[py : py + ph, px : px + pw]
    alpha = geometry.mask
    out = cv2.blendLinear(new, old, alpha, 1.0 - alpha)
    return px, py, out
