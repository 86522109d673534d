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
the landmarks by the same rule's geometry (`landmark_region`), taking the skin to be the
landmarks' convex hull and the nose their points 27-35: the hull grown as the rule's jaw kernel
dilates the skin (up to 6 parse px below the chin, 10 at the sides), in the cheek bands the grown
hull narrowed as the rule's erosion thins it, the nose cut out, the lips added, and nothing above
the box's centre row. Measured against the rule run on a label map drawn from the same landmarks,
both feathered, the alpha >= 0.5 areas overlap with IoU 0.96-0.99 (docs/musetalk.md, "Blend mask").
"""

from __future__ import annotations

import functools

import attrs
import cv2
import numpy as np

from poc.face.musetalk.parsing import CHEEK_WIDTH, PARSE_SIZE, jaw_kernel, parsing_square

EXTRA_MARGIN = 10  # v1.5: pixels added below the chin
BBOX_SHIFT = 0  # v1.5 fixes the nose-point shift at 0
FEATHER = 0.1  # Gaussian feather kernel, as a fraction of the parsing square's side
MIN_BOX = 16  # a smaller face cannot be animated meaningfully
NOSE_BRIDGE = 29
NOSE = list(range(27, 36))  # bridge and base: the parser's nose label lies within their hull
OUTER_LIPS = list(range(48, 60))
# parsing.jaw_region thins the cheek bands by eroding twice with this flat ellipse
CHEEK_ERODE_ELLIPSE = (35, 3)
CHEEK_ERODE_ITERATIONS = 2
SUBPIXEL = 4  # fillPoly's fractional bits: small faces keep the rule's sub-pixel margins


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


def _hull(points: np.ndarray) -> np.ndarray:
    """Vertices (n, 2) float64 of the convex hull of points (x, y)."""
    return cv2.convexHull(np.asarray(points, np.float32)).reshape(-1, 2).astype(np.float64)


def _kernel_offsets(kernel: np.ndarray) -> np.ndarray:
    """(x, y) offsets of a structuring element's cells from its centre anchor."""
    ys, xs = np.nonzero(kernel)
    return np.stack([xs - kernel.shape[1] // 2, ys - kernel.shape[0] // 2], axis=1)


@functools.cache  # fixed by the rule; read-only
def _grow_offsets() -> np.ndarray:
    """Where the jaw kernel's dilation carries a skin pixel, in parse px: cv2.dilate sets p when
    the skin is at p + offset, so a skin pixel q spreads to q - offset for every kernel offset."""
    return _hull(-_kernel_offsets(jaw_kernel()))


@functools.cache
def _thin_offsets() -> np.ndarray:
    """The extent of the repeated cheek erosion, in parse px: eroding n times by an element
    erodes once by its n-fold sum, and a convex region eroded by a set is its intersection with
    itself shifted by each vertex of the set's hull."""
    one = _kernel_offsets(cv2.getStructuringElement(cv2.MORPH_ELLIPSE, CHEEK_ERODE_ELLIPSE))
    total = np.zeros((1, 2), np.int64)
    for _ in range(CHEEK_ERODE_ITERATIONS):
        total = np.unique((total[:, None] + one[None]).reshape(-1, 2), axis=0)
    return _hull(total)


def _fill(shape: tuple[int, int], polygon: np.ndarray, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Boolean mask of a float polygon (box pixel coordinates), optionally translated."""
    fixed = np.round((polygon + shift) * (1 << SUBPIXEL)).astype(np.int32)
    out = np.zeros(shape, np.uint8)
    cv2.fillPoly(out, [fixed], 1, lineType=cv2.LINE_8, shift=SUBPIXEL)
    return out.astype(bool)


def landmark_region(landmarks: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Hard uint8 mask (box height x width, 255 inside): upstream's jaw rule (parsing.jaw_region,
    parsed_region) applied to a face whose skin is the landmarks' convex hull, drawn as polygons.

    The rule works on the parsing square resized to 512 px, so its pixel sizes scale by the
    square's side / 512 here. Its dilation of a convex skin is the skin's hull summed with the
    kernel's spread (a point 6 px below the chin, 10 px at the sides); its erosion is an
    intersection of shifted copies; its cheek bands are the columns 90 or more parse px from the
    square's centre. Then the nose is cut out, the lips are added back, and the rows above the
    box's centre are cleared, as parsed_region does."""
    x1, y1, x2, y2 = box
    shape = (y2 - y1, x2 - x1)
    sx1, sy1, sx2, sy2 = parsing_square(box)
    scale = (sx2 - sx1) / PARSE_SIZE  # box pixels per parse pixel
    pts = np.asarray(landmarks, np.float64) - (x1, y1)

    skin = _hull(pts)
    grown = _hull((skin[:, None] + _grow_offsets()[None] * scale).reshape(-1, 2))  # a Minkowski sum
    thinned = np.logical_and.reduce([_fill(shape, grown, -d * scale) for d in _thin_offsets()])

    centre = (sx1 + sx2) // 2 - x1
    columns = np.arange(shape[1])
    in_band = np.abs(columns - centre) >= CHEEK_WIDTH * scale
    region = np.where(in_band[None, :], thinned, _fill(shape, grown))

    region &= ~_fill(shape, _hull(pts[NOSE]))
    region |= _fill(shape, pts[OUTER_LIPS])
    region[: (sy1 + sy2) // 2 - y1] = False
    return np.where(region, 255, 0).astype(np.uint8)


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
