"""Prepared avatars: everything MuseTalk needs per body frame, computed once and cached.

Per source frame of the avatar (one for a still image) we keep the crop box, the paste region
with its feathered mask (the parsed jaw when the face-parsing weights exist, else drawn from the
landmarks), the landmarks, and the 8-channel reference latent (lower-half-masked crop ‖ full
crop, through the VAE). Only UNet + VAE decode + blend then run per output frame.

Preparing costs landmarks (~0.2 s/frame) plus two VAE encodes per frame (seconds each on CPU),
so the result is cached under `cache_dir/<key>/`, the key made of the source file's digest, the
output size and the model version: a restart loads it in well under a second, a changed source
file gets a new key and is prepared afresh. The cache also records which VAE made the latents and
which parser (or none) made the masks, and a different one rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import attrs
import numpy as np

from poc.face.avatar import Avatar
from poc.face.base import AvatarFaceError, EngineError
from poc.face.landmarks import NoFaceFound, detect_landmarks
from poc.face.musetalk.geometry import FaceGeometryError, FrameGeometry, crop_face, face_box, frame_geometry
from poc.face.musetalk.weights import VAE_CONFIG, VAE_WEIGHTS, file_fingerprint

if TYPE_CHECKING:
    from poc.face.musetalk.parsing import FaceParser
from poc.paths import RUN_DIR

log = logging.getLogger(__name__)

MODEL_VERSION = "musetalk-v15"
FORMAT = 3  # bump when the cache layout or what it holds changes (2: the upstream blend mask; 3: the landmark mask follows the jaw rule)
DEFAULT_CACHE_DIR = RUN_DIR / "avatars"


@attrs.frozen
class PreparedAvatar:
    """Per source frame i: geometry[i], latents[i] (8, 32, 32) float32, landmarks[i] (68, 2).
    parsed_frames: how many masks are the parsed jaw (the others follow the landmarks)."""

    key: str
    geometry: tuple[FrameGeometry, ...]
    latents: np.ndarray = attrs.field(eq=False)
    landmarks: np.ndarray = attrs.field(eq=False)
    parsed_frames: int = 0
    from_cache: bool = False


def cache_key(avatar: Avatar) -> str:
    """Directory name for this avatar: source digest + output size + model version."""
    w, h = avatar.size
    return f"{avatar.source_digest[:16]}-{w}x{h}-{MODEL_VERSION}"


def vae_fingerprint(models_dir: Path) -> str:
    """Identify the VAE cheaply: its config and its weights' fingerprint."""
    h = hashlib.sha256()
    h.update((models_dir / VAE_CONFIG.path).read_bytes())
    weights = VAE_WEIGHTS.find(models_dir)
    if weights is not None:
        h.update(file_fingerprint(weights).encode())
    return h.hexdigest()[:16]


def avatar_landmarks(frames: Sequence[np.ndarray]) -> np.ndarray:
    """(N, 68, 2) landmarks; a frame where no face is found borrows its nearest neighbour's,
    so one bad frame cannot shift the cycle (upstream drops it and misaligns the rest)."""
    found: list[np.ndarray | None] = []
    for frame in frames:
        try:
            found.append(detect_landmarks(frame))
        except NoFaceFound:
            found.append(None)
    good = [i for i, lm in enumerate(found) if lm is not None]
    if not good:
        raise AvatarFaceError("no face found in the avatar: MuseTalk needs a frontal face")
    if len(good) < len(found):
        log.warning("no face in %d of %d avatar frames; using the nearest frame's landmarks", len(found) - len(good), len(found))
    return np.stack([found[i] if found[i] is not None else found[min(good, key=lambda g: abs(g - i))] for i in range(len(found))])


def prepare_avatar(
    avatar: Avatar,
    encode: Callable[[np.ndarray], np.ndarray],
    cache_dir: Path | None = None,
    vae_id: str = "",
    parser: FaceParser | None = None,
) -> PreparedAvatar:
    """Load the prepared avatar from the cache, or build and cache it.

    encode: VAE reference encoder, (N, 256, 256, 3) uint8 BGR crops -> (N, 8, 32, 32) float32.
    vae_id: a fingerprint of the VAE behind `encode` (cached latents from another are rebuilt).
    parser: BiSeNet for upstream's parsed mask; None draws the mask from the landmarks.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    key = cache_key(avatar)
    folder = cache_dir / key
    meta = {
        "format": FORMAT,
        "source": str(avatar.source),
        "source_digest": avatar.source_digest,
        "size": list(avatar.size),
        "frames": len(avatar.frames),
        "model_version": MODEL_VERSION,
        "vae": vae_id,
        "mask": f"parsed:{parser.fingerprint}" if parser is not None else "landmarks",
    }
    t0 = time.perf_counter()
    cached = _load(folder, meta)
    if cached is not None:
        log.info("prepared avatar %s loaded from %s in %.2f s", avatar.source.name, folder, time.perf_counter() - t0)
        return cached
    prepared = build_prepared(avatar, encode, key, parser)
    try:
        _save(folder, meta, prepared)
    except OSError as e:  # the cache only saves time: a read-only disk must not stop the stream
        log.warning("cannot cache the prepared avatar in %s (%s); it will be prepared again next start", folder, e)
    log.info(
        "prepared avatar %s (%d frames, %d with a parsed jaw mask) in %.1f s, cached in %s",
        avatar.source.name, len(avatar.frames), prepared.parsed_frames, time.perf_counter() - t0, folder,
    )  # fmt: skip
    return prepared


def build_prepared(
    avatar: Avatar, encode: Callable[[np.ndarray], np.ndarray], key: str, parser: FaceParser | None = None
) -> PreparedAvatar:
    """Landmarks, geometry, crops and reference latents for every source frame (no cache)."""
    log.info("preparing avatar %s: landmarks for %d frame(s)", avatar.source.name, len(avatar.frames))
    landmarks = avatar_landmarks(avatar.frames)
    try:
        geometry, parsed = avatar_geometry(avatar, landmarks, parser)
    except FaceGeometryError as e:
        raise AvatarFaceError(f"avatar {avatar.source}: {e}") from e
    crops = np.stack([crop_face(f, g.box) for f, g in zip(avatar.frames, geometry)])
    log.info("preparing avatar %s: reference latents for %d crop(s)", avatar.source.name, len(crops))
    latents = np.ascontiguousarray(encode(crops), dtype=np.float32)
    if latents.shape != (len(crops), 8, 32, 32):
        raise EngineError(f"the VAE produced latents of shape {latents.shape}, expected ({len(crops)}, 8, 32, 32)")
    return PreparedAvatar(
        key=key, geometry=geometry, latents=latents, landmarks=landmarks.astype(np.float32), parsed_frames=parsed
    )


def avatar_geometry(
    avatar: Avatar, landmarks: np.ndarray, parser: FaceParser | None
) -> tuple[tuple[FrameGeometry, ...], int]:
    """Per frame: box and mask, and how many masks are parsed. A frame whose parse holds no jaw
    (the parser saw no skin there) falls back to the landmark mask, so one odd frame never stops
    the avatar."""
    w, h = avatar.size
    if parser is None:
        return tuple(frame_geometry(lm, w, h) for lm in landmarks), 0
    log.info("preparing avatar %s: face parsing for %d frame(s)", avatar.source.name, len(avatar.frames))
    regions = parser.regions(avatar.frames, [face_box(lm, w, h) for lm in landmarks])
    geometry, fallbacks = [], 0
    for lm, region in zip(landmarks, regions):
        try:
            geometry.append(frame_geometry(lm, w, h, region))
        except FaceGeometryError:
            geometry.append(frame_geometry(lm, w, h))
            fallbacks += 1
    if fallbacks:
        log.warning("face parsing found no jaw in %d of %d avatar frames; their mask follows the landmarks", fallbacks, len(regions))
    return tuple(geometry), len(regions) - fallbacks


def _save(folder: Path, meta: dict, prepared: PreparedAvatar) -> None:
    """Write into a fresh temporary folder, then swap it in: a crash never leaves a half cache."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    masks = [g.mask for g in prepared.geometry]
    np.savez(
        tmp / "prepared.npz",
        latents=prepared.latents,
        landmarks=prepared.landmarks,
        boxes=np.array([g.box for g in prepared.geometry], np.int32),
        paste=np.array([g.paste for g in prepared.geometry], np.int32),
        masks=np.concatenate([np.round(m.reshape(-1) * 255).astype(np.uint8) for m in masks]),
        parsed_frames=np.int32(prepared.parsed_frames),
    )
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def _load(folder: Path, meta: dict) -> PreparedAvatar | None:
    """The cached avatar if it exists and was made from the same source, size, model and VAE."""
    try:
        stored = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if not isinstance(stored, dict):
            raise ValueError("meta.json is not a JSON object")
        if _identity(stored) != _identity(meta):
            log.info("prepared avatar in %s is stale (%s); rebuilding", folder, _diff(stored, meta))
            return None
        with np.load(folder / "prepared.npz") as data:
            latents, landmarks = data["latents"], data["landmarks"]
            boxes, paste, masks = data["boxes"], data["paste"], data["masks"]
            parsed = int(data["parsed_frames"])
    except FileNotFoundError:
        return None
    # A damaged cache only costs a rebuild. np.load raises BadZipFile for a cut-off archive and
    # EOFError for an empty file (what a power cut can leave: the files are not fsynced).
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        log.warning("prepared avatar in %s is unreadable (%s); rebuilding", folder, e)
        return None
    geometry, offset = [], 0
    for box, (x, y, w, h) in zip(boxes, paste):
        mask = masks[offset : offset + w * h].reshape(h, w).astype(np.float32) / 255.0
        offset += w * h
        geometry.append(FrameGeometry(box=tuple(int(v) for v in box), paste=(int(x), int(y), int(w), int(h)), mask=mask))
    if offset != masks.size or len(geometry) != meta["frames"] or latents.shape[0] != meta["frames"]:
        log.warning("prepared avatar in %s is inconsistent; rebuilding", folder)
        return None
    return PreparedAvatar(
        key=folder.name, geometry=tuple(geometry), latents=latents, landmarks=landmarks, parsed_frames=parsed, from_cache=True
    )


def _identity(meta: dict) -> dict:
    """What the cached data depends on (not where the source file happens to be)."""
    return {k: v for k, v in meta.items() if k != "source"}


def _diff(stored: dict, meta: dict) -> str:
    a, b = _identity(stored), _identity(meta)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(keys) or "?"
