"""Service.build_engine: what a SIGHUP replacement builds while the old station stays on air.
A real Service with the warp engine and the espeak voice (no stream is started)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from poc.app import Service
from poc.config import load_settings
from poc.face.base import EngineError

ENV = {"TTS_PROVIDER": "espeak", "HTTP_PORT": "0", "RTMP_RESOLUTION": "320x240", "IDLE_BLINKS": "false",
       "IDLE_MOTION": "0", "TALKING_FACE_MODEL": "warp"}  # fmt: skip


def service_with(avatar: Path | None, tmp_path: Path) -> Service:
    overrides = {"STATIC_VIDEO_PATH": str(avatar)} if avatar is not None else {}
    return Service(load_settings(ENV, env_file=tmp_path / "none.env", overrides=overrides))


def test_an_avatar_without_a_face_fails_the_engine_build_naming_its_setting_and_is_let_go_of(tmp_path: Path) -> None:
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((240, 320, 3), 128, np.uint8))
    service = service_with(grey, tmp_path)
    with pytest.raises(EngineError) as raised:
        service.build_engine()
    assert raised.value.line().startswith("STATIC_VIDEO_PATH: ")
    assert service.engine is None
    service.discard()


def test_an_engine_built_ahead_is_the_one_the_stream_uses_and_discard_closes_it(tmp_path: Path) -> None:
    service = service_with(None, tmp_path)  # the shipped portrait
    service.build_engine()
    engine = service.engine
    assert engine is not None
    service.build_engine()  # built once: run() finds it there
    assert service.engine is engine
    service.discard()
    assert service.engine is None
