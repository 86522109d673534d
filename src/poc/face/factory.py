"""Pick and build the talking-face engine named by the settings."""

from __future__ import annotations

from poc.config import Settings
from poc.face.avatar import Avatar
from poc.face.base import AvatarFaceError, EngineError, FaceEngine
from poc.stations.current import CURRENT_STATION


def create_engine(settings: Settings, avatar: Avatar) -> FaceEngine:
    """Build the engine on `avatar`, the TALKING avatar: its body frames are the ones the mouth
    is drawn on (the idle avatar, when it differs, is only cross-faded to by the compositor).
    Blocking (loads landmarks or weights): run it in a worker thread. Raises EngineError naming
    a setting: the raiser's, the talking avatar's for a face it cannot use, else TALKING_FACE_MODEL."""
    try:
        return _build(settings, avatar)
    except AvatarFaceError as error:
        raise error.with_setting(settings.talking_avatar_setting)
    except EngineError as error:
        raise error.with_setting("TALKING_FACE_MODEL")


def _build(settings: Settings, avatar: Avatar) -> FaceEngine:
    if settings.talking_face_model == "warp":
        from poc.face.warp import WarpEngine

        return WarpEngine(avatar, fps=settings.fps, sample_rate=settings.sample_rate)
    if settings.talking_face_model == "musetalk":
        try:
            from poc.face.musetalk.engine import MuseTalkEngine
        except ImportError as error:
            raise EngineError(
                "TALKING_FACE_MODEL=musetalk needs the musetalk extra: pip install 'poc[musetalk]' "
                f"({error})"
            ) from None
        return MuseTalkEngine(
            avatar,
            models_dir=settings.model_path,
            device=settings.device,
            dtype=settings.dtype,
            batch_size=settings.batch_size,
            fps=settings.fps,
            sample_rate=settings.sample_rate,
            station=CURRENT_STATION.get(),  # names its rows in the batcher shared by all stations
        )
    raise EngineError(f"TALKING_FACE_MODEL: unknown engine {settings.talking_face_model!r}")
