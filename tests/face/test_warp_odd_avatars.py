"""The warp engine on a video avatar whose face cannot carry the warp in every frame."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from poc.face.avatar import Avatar
from poc.face.base import AvatarFaceError, SpeechSlot
from poc.face.warp import WarpEngine
from poc.paths import DEFAULT_AVATAR

FPS = 25
RATE = 16000


def loud() -> np.ndarray:
    t = np.arange(RATE // FPS) / RATE
    return np.round(32768 * 0.3 * math.sqrt(2) * np.sin(2 * np.pi * 180 * t)).astype(np.int16)


def far_away(image: np.ndarray, scale: float) -> np.ndarray:
    """The portrait shrunk into a black frame of its size: the presenter far from the camera."""
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    out = np.zeros_like(image)
    out[150 : 150 + small.shape[0], 180 : 180 + small.shape[1]] = small
    return out


def test_frames_whose_face_is_too_small_rest_the_mouth_without_breaking_the_utterance() -> None:
    # A presenter video where the face is large, then far away (a step back, a turn): the frames
    # of the second half are too small for the warp. Rigs are built on air, frame by frame; a
    # rig that raised lost the frames held back for the look-ahead, returned others twice and
    # logged a traceback for every batch over those frames.
    image = cv2.imread(str(DEFAULT_AVATAR))
    frames = (image,) * 12 + (far_away(image, 0.22),) * 12
    avatar = Avatar(frames=frames, source=Path("steps-back.mp4"), source_digest="test")
    engine = WarpEngine(avatar, FPS, RATE)
    utterance = engine.start_utterance()
    slots = [SpeechSlot(i, loud(), "a") for i in range(avatar.cycle_length)]
    out = []
    for begin in range(0, len(slots), 6):  # as the pipeline feeds it
        out += utterance.feed(slots[begin : begin + 6])
    out += utterance.finish()
    assert [f.index for f in out] == [s.index for s in slots]
    number = {f.index: avatar.frame_number(f.index) for f in out}
    talking = [f for f in out[2:-2] if number[f.index] < 8]  # away from the ends' easing
    far = [f for f in out if number[f.index] >= 16]
    assert talking and all(f.patch is not None for f in talking)
    assert far and all(f.patch is None for f in far)  # the idle face: the mouth rests there


def test_an_avatar_too_small_in_every_frame_is_still_refused_at_start_up() -> None:
    image = cv2.imread(str(DEFAULT_AVATAR))
    avatar = Avatar(frames=(far_away(image, 0.22),) * 3, source=Path("far.mp4"), source_digest="test")
    with pytest.raises(AvatarFaceError, match="too small"):
        WarpEngine(avatar, FPS, RATE)
