"""The default avatar at 1280x720 and its landmarks, for the living-idle tests (module-scoped:
loading and the face search cost a second each)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from poc.face.avatar import Avatar, load_avatar
from poc.face.landmarks import detect_landmarks

AVATAR = Path(__file__).resolve().parents[2] / "assets" / "avatar.png"


@pytest.fixture(scope="module")
def avatar() -> Avatar:
    return load_avatar(AVATAR, 1280, 720)


@pytest.fixture(scope="module")
def landmarks(avatar: Avatar) -> np.ndarray:
    return detect_landmarks(avatar.frames[0])[None]
