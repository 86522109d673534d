"""Mouth geometry for the CPU engine: a jaw-drop and lip-width warp of one avatar frame.

Why it is built this way (see "The CPU lip-sync engine" in the design notes):

* Only a region of interest (ROI) around the lower face is touched. Everything that does not
  depend on how far the mouth is open is computed once per avatar frame (`MouthRig`), so a
  rendered frame is one small `cv2.remap` plus a few array operations: well under a millisecond
  at 720p.
* The displacement is a smooth field, not a cut. In face coordinates (x along the eye line,
  y down the face), the lower lip, the chin and the jaw move down together. Between the inner
  lip corners the field steps at the lower inner lip contour, which is what opens the mouth;
  elsewhere it ramps in smoothly from the mouth line to the jaw, fades out sideways towards the
  cheeks and below the chin, and is zero above the mouth line, so the nose, the upper lip and the
  upper teeth never move and no seam appears at the mouth line.
* The opening is a lens between the upper teeth (left where they are) and the lowered lower lip,
  deepest in the middle, zero at the corners. It is filled with a dark interior that is darkest
  at the back of the mouth and feathered at its edges.
* Width follows the viseme: the lip corners are pushed out ("ee") or pulled in ("oo") by a
  second smooth field that fades before the nose and the chin. The jaw field is defined on the
  reshaped lips, so the opening follows the corners.
* A negative opening raises the lower lip to meet the upper one, for m/b/p on a portrait that
  rests with its teeth showing; it is limited to the lip gap so the lip never climbs higher.

Landmarks are dlib's 68 points (0-based): jaw 0-16, nose 27-35, eyes 36-47, outer lips 48-59,
inner lips 60-67.
"""

from __future__ import annotations

import warnings

import attrs
import cv2
import numpy as np

# How far the jaw drops at open=1, as a fraction of the outer mouth width.
MAX_DROP_OF_MOUTH_WIDTH = 0.28
# How far each lip corner moves at width=+1 (spread) and width=-1 (round), as a fraction of
# half the outer mouth width.
MAX_SPREAD_OF_HALF_WIDTH = 0.10
MAX_ROUND_OF_HALF_WIDTH = 0.24
# Below this outer mouth width (pixels) the fields degenerate; the avatar is too small.
MIN_MOUTH_WIDTH_PX = 12.0

FEATHER_PX = 0.9  # half-width of the soft edge around the filled opening
LIP_OVERLAP_PX = 0.8  # the fill reaches this far onto the lowered lip's inner edge
# Shape of the opening along the mouth: (1 - u^2)^p; larger p keeps the corners thinner.
LENS_POWER = 1.1


class RigError(ValueError):
    """The landmarks cannot carry a mouth warp (face too small or degenerate)."""


@attrs.frozen
class MouthPose:
    """How the mouth looks in one frame.

    open: fraction of the maximum jaw drop, 0 = as in the avatar image; negative values raise
        the lower lip towards the upper one (lips pressed), -1 closing the resting gap.
    width: -1 rounded (corners pulled in) .. 0 as in the image .. +1 spread (corners out).
    """

    open: float = 0.0
    width: float = 0.0

    @property
    def is_rest(self) -> bool:
        return abs(self.open) < 0.02 and abs(self.width) < 0.02


REST = MouthPose()


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _curve(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort (x, y) points by x so np.interp can read y as a function of x."""
    order = np.argsort(points[:, 0], kind="stable")
    return points[order, 0], points[order, 1]


class _FaceSampler:
    """Reads the frame on a grid in face coordinates (x along the eyes, y down the face)."""

    def __init__(self, frame: np.ndarray, origin: np.ndarray, ex: np.ndarray, ey: np.ndarray):
        self.frame, self.origin, self.ex, self.ey = frame, origin, ex, ey

    def grid(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        gx = self.origin[0] + xs[None, :] * self.ex[0] + ys[:, None] * self.ey[0]
        gy = self.origin[1] + xs[None, :] * self.ex[1] + ys[:, None] * self.ey[1]
        return cv2.remap(
            self.frame,
            gx.astype(np.float32),
            gy.astype(np.float32),
            interpolation=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )


def _lower_lip_colour(sampler: _FaceSampler, local: np.ndarray) -> np.ndarray:
    """Mean BGR of the middle of the lower lip: the mouth interior is tinted from it so it
    matches the photo's colour grading."""
    x_c = local[[66, 57], 0].mean()
    half = max(1.0, 0.2 * (local[54, 0] - local[48, 0]))
    y0, y1 = local[66, 1], local[57, 1]
    ys = np.linspace(y0 + 0.3 * (y1 - y0), y1 - 0.3 * (y1 - y0), 5)
    xs = np.linspace(x_c - half, x_c + half, 9)
    return sampler.grid(xs, ys).reshape(-1, 3).astype(np.float64).mean(axis=0)


def _lip_line(sampler: _FaceSampler, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The boundary between the mouth interior (teeth, dark gap) and the lower lip, as y over x
    in face coordinates.

    dlib's lower inner contour (60, 67-65, 64) often sits a pixel or two inside the lip and, as a
    polyline, cuts through the teeth near the corners; splitting there would drag a white sliver
    of teeth down with the lip or leave a pink one under the teeth. So each column near the
    contour looks for the strongest colour edge (teeth or gap above, lip below), with a prior
    towards the contour, and a smooth low-order curve fitted through those edges is the split.
    With the lips together there is nothing to find and the contour is kept.
    """
    cx, cy = _curve(local[[60, 67, 66, 65, 64]])
    ux, uy = _curve(local[[60, 61, 62, 63, 64]])
    left, right = local[60, 0], local[64, 0]
    xs = np.arange(np.ceil(left) + 1.0, np.floor(right) - 0.5)
    if xs.size < 7:
        return cx, cy
    s0 = np.interp(xs, cx, cy)
    u0 = np.interp(xs, ux, uy)
    mid = slice(xs.size // 4, 3 * xs.size // 4)
    if np.median((s0 - u0)[mid]) < 2.0:
        return cx, cy  # lips together: no interior to separate from
    reach = max(2.0, 0.07 * (local[54, 0] - local[48, 0]))
    ys = np.arange(np.floor(u0.min()) - 1.0, np.ceil(s0.max() + reach) + 2.0)
    lab = cv2.cvtColor(sampler.grid(xs, ys), cv2.COLOR_BGR2LAB).astype(np.float32)
    edge = np.linalg.norm(lab[1:] - lab[:-1], axis=-1)  # between rows i and i+1
    yb = (ys[:-1] + 0.5)[:, None]
    inside = (yb >= np.maximum(u0 + 1.0, s0 - reach)) & (yb <= s0 + reach)
    score = np.where(inside, edge * np.exp(-0.5 * ((yb - s0) / reach) ** 2), -1.0)
    best = score.argmax(axis=0)
    found = yb[best, 0]
    strength = score[best, np.arange(xs.size)]
    ok = strength > 6.0  # a real edge, not noise in flat colour
    if ok.sum() < 5:
        return cx, cy
    # Robust smooth fit: a quartic through the edges, refitted without the outliers.
    t = (xs - (left + right) / 2.0) / max(1.0, (right - left) / 2.0)
    keep = ok.copy()
    for _ in range(2):
        with warnings.catch_warnings():  # a poorly conditioned fit is still a usable curve
            warnings.simplefilter("ignore", np.exceptions.RankWarning)
            deg = min(4, int(keep.sum()) - 1)
            coef = np.polyfit(t[keep], found[keep], deg=deg, w=strength[keep])
        resid = np.abs(np.polyval(coef, t) - found)
        keep = ok & (resid < max(1.0, 0.35 * reach))
        if keep.sum() < 5:
            break
    fitted = np.clip(np.polyval(coef, t), np.maximum(u0 + 0.5, s0 - reach), s0 + reach)
    # Keep the inner corners themselves as the curve's ends.
    return (
        np.concatenate([[left], xs, [right]]),
        np.concatenate([[local[60, 1]], fitted, [local[64, 1]]]),
    )


@attrs.frozen
class _Face:
    """The lower face in face coordinates: x along the eye line, y down the face (pixels),
    origin between the inner lip corners."""

    origin: np.ndarray
    ex: np.ndarray  # unit vectors of the face axes in the frame
    ey: np.ndarray
    local: np.ndarray  # the 68 landmarks in face coordinates

    @classmethod
    def from_landmarks(cls, landmarks: np.ndarray) -> _Face:
        lm = np.asarray(landmarks, dtype=np.float64)
        if lm.shape != (68, 2) or not np.all(np.isfinite(lm)):
            raise RigError("expected 68 finite (x, y) landmarks")
        # The eye line rather than the lip corners: a smile tilts those.
        ex = lm[42:48].mean(axis=0) - lm[36:42].mean(axis=0)
        if np.hypot(*ex) < 1e-6:
            raise RigError("degenerate eye landmarks")
        ex /= np.hypot(*ex)
        ey = np.array([-ex[1], ex[0]])
        origin = (lm[60] + lm[64]) / 2.0
        local = (lm - origin) @ np.stack([ex, ey]).T
        mouth_w = local[54, 0] - local[48, 0]
        if mouth_w < MIN_MOUTH_WIDTH_PX:
            raise RigError(
                f"face too small for the mouth warp: mouth {mouth_w:.0f} px wide, "
                f"need at least {MIN_MOUTH_WIDTH_PX:.0f}"
            )
        return cls(origin=origin, ex=ex, ey=ey, local=local)

    @property
    def mouth_width(self) -> float:
        return float(self.local[54, 0] - self.local[48, 0])

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        return self.origin + points @ np.stack([self.ex, self.ey])


def check_face(landmarks: np.ndarray) -> None:
    """Raise RigError when a face with these landmarks cannot carry the warp (too small, or
    degenerate); cheap: nothing of a rig is built."""
    _Face.from_landmarks(landmarks)


class MouthRig:
    """The precomputed warp of one avatar frame; `render` draws it at any `MouthPose`.

    `x, y, w, h` is the ROI in the frame; nothing outside it ever changes.
    """

    def __init__(self, frame: np.ndarray, landmarks: np.ndarray) -> None:
        """frame: the avatar frame (uint8 HxWx3 BGR); landmarks: (68, 2) in its pixels."""
        face = _Face.from_landmarks(landmarks)
        loc = face.local
        sampler = _FaceSampler(frame, face.origin, face.ex, face.ey)

        # Where the jaw field steps (the lower lip's inner edge, refined on the image) and how
        # far the lower lip may rise before it meets the upper one.
        self._split = _lip_line(sampler, loc)
        in_cx = (loc[60, 0] + loc[64, 0]) / 2.0
        split_c = float(np.interp(in_cx, *self._split))
        upper = _curve(loc[[60, 61, 62, 63, 64]])
        self.mouth_to_chin = max(4.0, float(loc[8, 1]) - split_c)
        self._split_c = split_c
        # Plain floats: a NumPy float64 scalar would promote the float32 maps to float64.
        self.max_drop = float(MAX_DROP_OF_MOUTH_WIDTH * face.mouth_width)
        self.max_raise = float(max(0.0, split_c - float(np.interp(in_cx, *upper))))
        self.max_spread = float(MAX_SPREAD_OF_HALF_WIDTH * face.mouth_width / 2.0)
        self.max_round = float(MAX_ROUND_OF_HALF_WIDTH * face.mouth_width / 2.0)

        # Interior tones from the lip colour (so they match the photo's grading), red kept a
        # little stronger: shadowed flesh.
        lip_bgr = _lower_lip_colour(sampler, loc)
        self._interior_edge = (lip_bgr * [0.30, 0.30, 0.42]).astype(np.float32)
        self._interior_deep = (lip_bgr * [0.09, 0.09, 0.12]).astype(np.float32)
        self._tongue = (lip_bgr * [0.50, 0.50, 0.68]).astype(np.float32)

        self._place_roi(face, frame.shape[1], frame.shape[0])
        gy, gx = np.mgrid[self.y : self.y + self.h, self.x : self.x + self.w].astype(np.float64)
        rel_x, rel_y = gx - face.origin[0], gy - face.origin[1]
        lx = rel_x * face.ex[0] + rel_y * face.ex[1]
        ly = rel_x * face.ey[0] + rel_y * face.ey[1]
        border = self._edge_fade(self.w, self.h)
        self._jaw, self._depth_x = self._jaw_maps(face, lx, ly, border)
        self._width = self._width_field(face, lx, ly, border)

        self._ex = face.ex.astype(np.float32)
        self._ey = face.ey.astype(np.float32)
        self._gx = gx.astype(np.float32)
        self._gy = gy.astype(np.float32)
        self._rx = self._gx - np.float32(self.x)  # ROI pixel grid, to resample the jaw maps
        self._ry = self._gy - np.float32(self.y)

    # -- construction ---------------------------------------------------------------------

    def _lateral(self, face: _Face) -> tuple[float, float]:
        """Full jaw motion out to just beyond the lip corners, none past the jaw line."""
        loc = face.local
        half_w = face.mouth_width / 2.0
        face_half = max(half_w * 1.3, (loc[13, 0] - loc[3, 0]) / 2.0)
        inner = half_w * 1.05
        return inner, max(inner + 4.0, face_half * 1.05)

    def _below_chin(self) -> float:
        """Fade-out distance below the chin: short, so the chin slides over the neck and the
        collar or background further down stays put."""
        return max(0.45 * self.mouth_to_chin + 0.3 * self.max_drop, 4.0)

    def _place_roi(self, face: _Face, frame_w: int, frame_h: int) -> None:
        """The ROI: the box, in the frame, around everything either field can move."""
        loc = face.local
        in_cx = (loc[60, 0] + loc[64, 0]) / 2.0
        _, lat_out = self._lateral(face)
        top = min(loc[33, 1], loc[51, 1] - 4.0)  # the nose tip never moves
        bottom = loc[8, 1] + self._below_chin() + 2.0
        left, right = in_cx - lat_out - 2.0, in_cx + lat_out + 2.0
        corners = face.to_frame(
            np.array([[left, top], [right, top], [left, bottom], [right, bottom]])
        )
        x0 = int(np.clip(np.floor(corners[:, 0].min()), 0, frame_w - 1))
        y0 = int(np.clip(np.floor(corners[:, 1].min()), 0, frame_h - 1))
        x1 = int(np.clip(np.ceil(corners[:, 0].max()) + 1, x0 + 1, frame_w))
        y1 = int(np.clip(np.ceil(corners[:, 1].max()) + 1, y0 + 1, frame_h))
        self.x, self.y, self.w, self.h = x0, y0, x1 - x0, y1 - y0

    def _jaw_maps(
        self, face: _Face, lx: np.ndarray, ly: np.ndarray, border: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The jaw field as four maps, combined per frame in `render`:
        dy   distance below the lower lip's inner edge;
        k    the stepped share of the drop (lens profile x sideways and under-chin fades);
        g    the ramped share, which brings cheeks and chin along without a seam;
        lift how much of a raise reaches here (the lower lip only, not the chin).
        Also the interior's sideways depth shading (1 mid-mouth, 0 at the corners)."""
        loc = face.local
        in_cx = (loc[60, 0] + loc[64, 0]) / 2.0
        in_hw = max(2.0, (loc[64, 0] - loc[60, 0]) / 2.0)
        lat_in, lat_out = self._lateral(face)
        u = (lx - in_cx) / in_hw
        lens = np.clip(1.0 - u * u, 0.0, 1.0) ** LENS_POWER
        lateral = 1.0 - _smoothstep((np.abs(lx - in_cx) - lat_in) / (lat_out - lat_in))
        # The jaw line as a parabola through points 3-13: a polyline would put its kinks into
        # the field and ripple the edge of the chin.
        jaw_coef = np.polyfit(loc[3:14, 0], loc[3:14, 1], deg=2)
        jaw = np.polyval(jaw_coef, np.clip(lx, loc[3, 0], loc[13, 0]))
        under_chin = 1.0 - _smoothstep((ly - jaw) / self._below_chin())
        dy = ly - np.interp(lx, *self._split)
        ramp = _smoothstep(dy / (0.9 * self.mouth_to_chin))
        fade = lateral * under_chin * border
        lip_h = max(1.0, loc[57, 1] - self._split_c)
        lift = 1.0 - _smoothstep((dy - lip_h) / max(2.0, 0.7 * self.mouth_to_chin))
        maps = np.stack([dy, lens * fade, (1.0 - lens) * ramp * fade, lift], axis=-1)
        depth_x = np.clip(1.0 - u * u, 0.0, 1.0)
        return np.ascontiguousarray(maps, dtype=np.float32), depth_x.astype(np.float32)

    def _width_field(
        self, face: _Face, lx: np.ndarray, ly: np.ndarray, border: np.ndarray
    ) -> np.ndarray:
        """Sideways motion per unit of corner shift: the corners move most and the middle of
        the mouth (the front teeth) barely (v|v|), fading out beyond the corners; vertically it
        spans the lips and the lowered lower lip, and is gone by the nose and the chin."""
        loc = face.local
        half_w = face.mouth_width / 2.0
        v = (lx - (loc[48, 0] + loc[54, 0]) / 2.0) / half_w
        av = np.abs(v)
        along = np.sign(v) * np.where(av <= 1.0, av * av, 1.0 - _smoothstep((av - 1.0) / 1.2))
        lip_top, lip_bot = loc[51, 1], loc[57, 1]
        above = max(3.0, lip_top - loc[33, 1])
        band = np.where(
            ly < lip_top,
            1.0 - _smoothstep((lip_top - ly) / above),
            1.0 - _smoothstep((ly - lip_bot - self.max_drop) / max(3.0, self.mouth_to_chin)),
        )
        return (along * band * border).astype(np.float32)

    @staticmethod
    def _edge_fade(w: int, h: int) -> np.ndarray:
        """1 inside, 0 on the ROI border: a safety net should the ROI have been clipped by the
        frame edge, so the pasted patch always matches its surroundings."""
        margin = 3.0
        ys = np.minimum(np.arange(h), np.arange(h)[::-1])[:, None]
        xs = np.minimum(np.arange(w), np.arange(w)[None, ::-1])
        return _smoothstep(np.minimum(ys, xs) / margin)

    # -- per frame ------------------------------------------------------------------------

    def render(self, frame: np.ndarray, pose: MouthPose) -> np.ndarray:
        """Return the ROI of `frame` (uint8 HxWx3) with the mouth at `pose`."""
        drop = float(np.clip(pose.open, -1.0, 1.0))
        drop = drop * self.max_drop if drop >= 0 else drop * min(self.max_raise, self.max_drop)
        width = float(np.clip(pose.width, -1.0, 1.0))
        shift = width * (self.max_spread if width >= 0 else self.max_round)

        # Reshape the lips first, then open the jaw on the reshaped lips: the jaw maps are
        # read through the width warp, so the opening follows the corners.
        wx = self._width * shift
        if shift != 0.0:
            sx, sy = self._rx - wx * self._ex[0], self._ry - wx * self._ex[1]
            jaw = cv2.remap(self._jaw, sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            depth_x = cv2.remap(
                self._depth_x, sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
        else:
            jaw, depth_x = self._jaw, self._depth_x
        dy, k, g = jaw[..., 0], jaw[..., 1], jaw[..., 2]
        if drop < 0.0:
            k, g = k * jaw[..., 3], g * jaw[..., 3]

        # The step applies below the lip's edge; when the lip rises, below its new position.
        step = (dy >= min(drop, 0.0) * k).astype(np.float32)
        d = drop * (k * step + g)
        map_x = self._gx - d * self._ey[0] - wx * self._ex[0]
        map_y = self._gy - d * self._ey[1] - wx * self._ex[1]
        out = cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if drop > 0.5:
            self._fill_opening(out, dy, drop * k, depth_x)
        return out

    def _fill_opening(
        self, out: np.ndarray, dy: np.ndarray, height: np.ndarray, depth_x: np.ndarray
    ) -> None:
        """Paint the mouth interior into the lens 0 <= dy < height (in place)."""
        # The lip's first row is a blend of lip and teeth in the photo: cover it too.
        height = height + LIP_OVERLAP_PX * np.clip(height / 2.0, 0.0, 1.0)
        inside = (dy > -FEATHER_PX) & (dy < height + FEATHER_PX)
        if not inside.any():
            return
        rows, cols = np.nonzero(inside)
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        dy, height, depth_x = dy[r0:r1, c0:c1], height[r0:r1, c0:c1], depth_x[r0:r1, c0:c1]
        soft = 2 * FEATHER_PX
        alpha = (
            np.clip(0.5 + dy / soft, 0.0, 1.0)
            * np.clip(0.5 + (height - dy) / soft, 0.0, 1.0)
            * np.clip(height / soft, 0.0, 1.0)  # thin at the corners, nothing past them
        )
        # Darker away from the lips (the back of the mouth) and towards its middle.
        t = np.clip(dy / np.maximum(height, 1e-3), 0.0, 1.0)
        depth = np.sqrt(np.clip(np.sin(np.pi * t), 0.0, 1.0)) * depth_x
        depth *= np.clip(height / 6.0, 0.0, 1.0)  # a narrow slit stays a dark line, not black
        edge, deep = self._interior_edge, self._interior_deep
        colour = edge + (deep - edge) * depth[..., None]
        # A hint of tongue low in a wide-open mouth, so a big opening is not a flat black hole.
        tongue = (t**3) * depth_x * np.clip((height - 8.0) / 12.0, 0.0, 0.5)
        colour += (self._tongue - colour) * tongue[..., None]
        region = out[r0:r1, c0:c1].astype(np.float32)
        a = alpha[..., None]
        out[r0:r1, c0:c1] = (region * (1.0 - a) + colour * a + 0.5).astype(np.uint8)
