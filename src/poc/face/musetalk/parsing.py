"""Upstream's blend mask: parse the face with BiSeNet and keep the jaw, when those weights exist.

The weights (`face-parse-bisent/79999_iter.pth`, the face-parsing.PyTorch release MuseTalk
uses) are optional: without them the mask is drawn from the landmarks (geometry.py). With them,
each avatar frame is parsed once, at preparation, in upstream's v1.5 `jaw` mode:

1. Cut a square around the face box's centre, 1.5x the box's larger half-side each way (black
   where it leaves the frame), and resize it to 512x512.
2. Parse it (19 CelebAMask-HQ classes) and take the skin. Dilate the skin with upstream's 33x33
   kernel: empty in its top 10 rows, a triangle below, a 21-px bar at the bottom. With the anchor
   at the centre, the bar grows the skin up to 16 px upwards (21 px wide) and the triangle up to
   6 px downwards in a narrowing point. Erode the dilated skin twice with a flat 35x3 ellipse; use
   that thinner version in the two cheek bands (90 px or more of the 512 left or right of the
   centre) so the patch does not bleed over the cheeks' edges.
3. Mask = that region minus the nose, plus mouth and both lips.

geometry.py then keeps the part inside the face box and below its centre and feathers it as
upstream does (a Gaussian from the 1.5x square, no erosion).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from poc.face.base import EngineError
from poc.face.musetalk import _deps
from poc.face.musetalk.weights import PARSER_WEIGHTS, file_fingerprint, load_state_dict, parser_problem

log = logging.getLogger(__name__)

PARSE_SIZE = 512
SKIN, NOSE, MOUTH, UPPER_LIP, LOWER_LIP = 1, 10, 11, 12, 13
CHEEK_WIDTH = 90  # v1.5 scripts' value: the central strip is 2x90 px of the 512
CROP_EXPAND = 1.5  # the parsed square's half-side, relative to the box's larger half-side
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def jaw_kernel() -> np.ndarray:
    """The 33x33 dilation kernel: rows 0-9 empty, rows 10-20 a centred triangle of widths
    1, 3, ..., 21, rows 21-32 a 21-px bar (anchor at the centre, row and column 16)."""
    size, centre = 33, 16
    kernel = np.zeros((size, size), np.uint8)
    for row in range(10, 21):
        half = row - 10
        kernel[row, centre - half : centre + half + 1] = 1
    kernel[21:, centre - 10 : centre + 11] = 1
    return kernel


def cheek_bands(size: int = PARSE_SIZE, width: int = CHEEK_WIDTH) -> np.ndarray:
    """Boolean (size, size): True in the left and right cheek bands."""
    columns = np.arange(size)
    centre = size // 2
    band = (columns <= centre - width) | (columns >= centre + width)
    return np.broadcast_to(band, (size, size))


def jaw_region(labels: np.ndarray) -> np.ndarray:
    """(512, 512) class labels -> uint8 mask, 255 on the jaw region (see the module docstring)."""
    labels = np.asarray(labels)
    if labels.shape != (PARSE_SIZE, PARSE_SIZE):
        raise ValueError(f"expected ({PARSE_SIZE}, {PARSE_SIZE}) labels, got {labels.shape}")
    skin = np.where(labels == SKIN, 255, 0).astype(np.uint8)
    dilated = cv2.dilate(skin, jaw_kernel())
    thinned = cv2.erode(dilated, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (35, 3)), iterations=2)
    region = np.where(cheek_bands(), thinned, dilated) > 0
    keep = (region & (labels != NOSE)) | np.isin(labels, (MOUTH, UPPER_LIP, LOWER_LIP))
    return np.where(keep, 255, 0).astype(np.uint8)


def parsing_square(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The square (x1, y1, x2, y2) parsed around a face box; it may extend past the frame."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    half = int(max(x2 - x1, y2 - y1) // 2 * CROP_EXPAND)
    return cx - half, cy - half, cx + half, cy + half


def cut_square(frame: np.ndarray, square: tuple[int, int, int, int]) -> np.ndarray:
    """The frame's pixels under the square, black where the square leaves the frame."""
    x1, y1, x2, y2 = square
    h, w = frame.shape[:2]
    out = np.zeros((y2 - y1, x2 - x1, 3), np.uint8)
    sx1, sy1, sx2, sy2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if sx2 > sx1 and sy2 > sy1:
        out[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = frame[sy1:sy2, sx1:sx2]
    return out


def parsed_region(frame: np.ndarray, box: tuple[int, int, int, int], labels: np.ndarray) -> np.ndarray:
    """The jaw region from labels of `parsing_square(box)`, as a hard uint8 mask over the box,
    cleared above the box's centre row (upstream keeps only the lower half of the square)."""
    x1, y1, x2, y2 = box
    sx1, sy1, sx2, sy2 = parsing_square(box)
    side = sx2 - sx1
    region = cv2.resize(jaw_region(labels), (side, side), interpolation=cv2.INTER_LINEAR)
    inside = np.where(region[y1 - sy1 : y2 - sy1, x1 - sx1 : x2 - sx1] >= 128, 255, 0).astype(np.uint8)
    inside[: (sy1 + sy2) // 2 - y1] = 0
    return inside


class FaceParser:
    """BiSeNet on one device, float32 (it runs once per avatar frame, at preparation only)."""

    def __init__(self, net: Any, device: str, fingerprint: str) -> None:
        self.torch = _deps.require("torch")
        self.net = net.to(device=device, dtype=self.torch.float32).eval()
        self.device = device
        self.fingerprint = fingerprint

    def labels(self, squares_bgr: Sequence[np.ndarray], batch: int = 8) -> list[np.ndarray]:
        """Square BGR crops of any size -> (512, 512) uint8 class labels each."""
        torch = self.torch
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for i in range(0, len(squares_bgr), batch):
                rgb = [cv2.resize(s, (PARSE_SIZE, PARSE_SIZE), interpolation=cv2.INTER_LINEAR)[:, :, ::-1] for s in squares_bgr[i : i + batch]]
                x = (np.stack(rgb).astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
                scores = self.net(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().to(self.device))
                out += list(scores.argmax(dim=1).to(torch.uint8).cpu().numpy())
        return out

    def regions(self, frames: Sequence[np.ndarray], boxes: Sequence[tuple[int, int, int, int]]) -> list[np.ndarray]:
        """Hard jaw masks over each frame's face box."""
        squares = [cut_square(f, parsing_square(b)) for f, b in zip(frames, boxes)]
        return [parsed_region(f, b, lab) for f, b, lab in zip(frames, boxes, self.labels(squares))]


def load_parser(models_dir: Path, device: str) -> FaceParser | None:
    """BiSeNet from models_dir, or None when its weights are not there (the landmark mask is
    used then). A file that is there but cannot be loaded is an EngineError naming it."""
    path = PARSER_WEIGHTS.find(Path(models_dir))
    if path is None:
        return None
    problem = parser_problem(Path(models_dir))
    if problem:
        raise EngineError(problem, setting="TALKING_FACE_MODEL_PATH")
    torch = _deps.require("torch")
    from poc.face.musetalk.bisenet import FaceParsingNet

    with torch.device("meta"):
        net = FaceParsingNet()
    # parser_problem has matched every name and shape, step counters aside: no second check here
    net.load_state_dict(load_state_dict(path), strict=False, assign=True)
    for module in net.modules():  # old checkpoints may not carry the BN step counters
        if isinstance(module, torch.nn.BatchNorm2d) and module.num_batches_tracked.is_meta:
            module.num_batches_tracked = torch.zeros((), dtype=torch.long)
    log.info("face parsing (BiSeNet) loaded from %s: the blend mask follows the parsed jaw", path)
    return FaceParser(net, device, file_fingerprint(path))

