"""The CPU warp engine (poc.face.warp, poc.face.mouth) on the default avatar."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest

from poc.face.avatar import Avatar, load_avatar
from poc.face.base import EngineError, RenderedFrame, SpeechSlot
from poc.face.landmarks import detect_landmarks
from poc.face.mouth import MouthPose, MouthRig
from poc.face.warp import WarpEngine
from poc.paths import DEFAULT_AVATAR

FPS = 25
RATE = 16000
SAMPLES = RATE // FPS
WIDTH, HEIGHT = 640, 360


def tone(dbfs: float) -> np.ndarray:
    amplitude = 32768.0 * math.sqrt(2.0) * 10 ** (dbfs / 20.0)
    t = np.arange(SAMPLES) / RATE
    return np.round(amplitude * np.sin(2 * np.pi * 180.0 * t)).astype(np.int16)


def silence() -> np.ndarray:
    return np.zeros(SAMPLES, dtype=np.int16)


@pytest.fixture(scope="module")
def avatar() -> Avatar:
    return load_avatar(DEFAULT_AVATAR, WIDTH, HEIGHT)


@pytest.fixture(scope="module")
def engine(avatar: Avatar) -> Iterator[WarpEngine]:
    eng = WarpEngine(avatar, FPS, RATE)
    yield eng
    eng.close()


def run(engine: WarpEngine, slots: list[SpeechSlot], chunk: int = 4) -> list[RenderedFrame]:
    utterance = engine.start_utterance()
    frames = []
    for i in range(0, len(slots), chunk):
        frames += utterance.feed(slots[i : i + chunk])
    return frames + utterance.finish()


@pytest.fixture(scope="module")
def box(avatar: Avatar) -> tuple[slice, slice]:
    """Rows and columns around the lips and chin of the default avatar."""
    lm = detect_landmarks(avatar.frames[0])
    x0, x1 = int(lm[48, 0]) - 4, int(lm[54, 0]) + 5
    y0, y1 = int(lm[51, 1]) - 2, int(lm[8, 1]) + 2
    return slice(y0, y1), slice(x0, x1)


def paste(avatar: Avatar, frame: RenderedFrame) -> np.ndarray:
    out = avatar.frame_at(frame.index).copy()
    if frame.patch is not None:
        p = frame.patch
        out[p.y : p.y + p.height, p.x : p.x + p.width] = p.pixels
    return out


def opening(avatar: Avatar, frame: RenderedFrame, box: tuple[slice, slice]) -> int:
    """Pixels near the mouth that are dark (the mouth interior) but were not in the idle frame."""
    rows, cols = box
    idle = cv2.cvtColor(avatar.frame_at(frame.index)[rows, cols], cv2.COLOR_BGR2GRAY)
    now = cv2.cvtColor(paste(avatar, frame)[rows, cols], cv2.COLOR_BGR2GRAY)
    return int(np.count_nonzero((now < 70) & (idle >= 70)))


def test_one_frame_per_slot_in_index_order(engine: WarpEngine) -> None:
    slots = [SpeechSlot(5000 + i, tone(-18.0) if i % 5 else silence()) for i in range(23)]
    utterance = engine.start_utterance()
    frames = []
    fed = 0  # batches of varying size, an empty one included
    for size in (1, 0, 3, 7, 2, 10):
        frames += utterance.feed(slots[fed : fed + size])
        fed += size
    frames += utterance.finish()
    assert [f.index for f in frames] == [s.index for s in slots]
    assert utterance.finish() == []


def test_silence_gives_no_patch(engine: WarpEngine) -> None:
    frames = run(engine, [SpeechSlot(i, silence()) for i in range(12)])
    assert len(frames) == 12
    assert all(f.patch is None for f in frames)


def test_loud_audio_opens_the_mouth_and_louder_opens_more(
    engine: WarpEngine, avatar: Avatar, box: tuple[slice, slice]
) -> None:
    def peak(dbfs: float) -> int:
        frames = run(engine, [SpeechSlot(i, tone(dbfs)) for i in range(14)])
        return max(opening(avatar, f, box) for f in frames)

    quiet, loud = peak(-34.0), peak(-16.0)
    assert 0 < quiet < loud


def test_open_vowels_open_more_than_other_phonemes(
    engine: WarpEngine, avatar: Avatar, box: tuple[slice, slice]
) -> None:
    def middle(phoneme: str) -> RenderedFrame:
        return run(engine, [SpeechSlot(i, tone(-18.0), phoneme) for i in range(11)])[5]

    a, schwa, m = middle("a"), middle("ə"), middle("m")
    assert opening(avatar, a, box) > opening(avatar, schwa, box) > 0
    assert opening(avatar, m, box) == 0
    # "m" still moves the lips (pressed together), so it is not the idle frame.
    assert m.patch is not None
    assert not np.array_equal(paste(avatar, m), avatar.frame_at(m.index))


def test_an_utterance_ends_on_the_idle_mouth(
    engine: WarpEngine, avatar: Avatar, box: tuple[slice, slice]
) -> None:
    """Even when speech runs to the last slot, the final frame shows the resting mouth."""
    frames = run(engine, [SpeechSlot(i, tone(-16.0), "a") for i in range(10)])
    assert np.array_equal(paste(avatar, frames[-1]), avatar.frame_at(frames[-1].index))
    assert opening(avatar, frames[-2], box) < opening(avatar, frames[-5], box)


def test_patch_matches_the_body_frame_at_its_border(engine: WarpEngine, avatar: Avatar) -> None:
    """No seam where the patch is pasted: its outermost pixels are the frame's own."""
    frames = run(engine, [SpeechSlot(i, tone(-14.0), "a") for i in range(8)])
    for frame in frames:
        if frame.patch is None:
            continue
        p = frame.patch
        body = avatar.frame_at(frame.index)[p.y : p.y + p.height, p.x : p.x + p.width]
        for edge in (np.s_[0, :], np.s_[-1, :], np.s_[:, 0], np.s_[:, -1]):
            assert np.abs(p.pixels[edge].astype(int) - body[edge].astype(int)).max() <= 1


def test_no_tear_across_the_cheeks(avatar: Avatar) -> None:
    """Render a coordinate image through the warp: beside the mouth (outside the opening) the
    source rows must run on smoothly, with no jump at the mouth line."""
    frame = avatar.frames[0]
    lm = detect_landmarks(frame)
    rig = MouthRig(frame, lm)
    rows = np.repeat(np.arange(frame.shape[0], dtype=np.float32)[:, None], frame.shape[1], 1)
    coords = np.dstack([rows / 4.0] * 3).clip(0, 255).astype(np.uint8)  # 4 px per level
    for pose in (MouthPose(1.0, 0.0), MouthPose(0.6, -1.0), MouthPose(-1.0, 0.0)):
        warped = rig.render(coords, pose)[..., 0].astype(int)
        left, right = int(lm[48, 0]) - rig.x - 3, int(lm[54, 0]) - rig.x + 3
        cheeks = np.r_[0:left, right : rig.w]
        steps = np.diff(warped[:, cheeks], axis=0)
        assert steps.min() >= 0, pose  # never runs backwards (no fold)
        assert steps.max() <= 1, pose  # never skips a 4-px band (no tear)


def test_patch_stays_inside_the_frame_when_the_face_touches_its_edge() -> None:
    source = cv2.imread(str(DEFAULT_AVATAR))
    lm = detect_landmarks(source)
    bottom = int(lm[8, 1]) + 6  # cut just below the chin
    cropped = np.ascontiguousarray(source[:bottom, 100:420])
    avatar = Avatar(frames=(cropped,), source=Path("cropped.png"), source_digest="test")
    engine = WarpEngine(avatar, FPS, RATE)
    frames = run(engine, [SpeechSlot(i, tone(-14.0), "a") for i in range(8)])
    h, w = cropped.shape[:2]
    patches = [f.patch for f in frames if f.patch is not None]
    assert patches
    for p in patches:
        assert 0 <= p.x and 0 <= p.y and p.x + p.width <= w and p.y + p.height <= h
        assert p.pixels.dtype == np.uint8 and p.pixels.shape[2] == 3


def test_video_avatar_draws_on_the_body_frame_of_each_index(avatar: Avatar) -> None:
    base = avatar.frames[0]
    shifted = tuple(
        np.ascontiguousarray(np.roll(base, shift=(2 * k, 3 * k), axis=(0, 1))) for k in range(3)
    )
    video = Avatar(frames=shifted, source=Path("shifted.mp4"), source_digest="test")
    engine = WarpEngine(video, FPS, RATE)
    frames = run(engine, [SpeechSlot(i, tone(-14.0), "a") for i in range(9)])
    checked = 0
    for frame in frames:
        if frame.patch is None:
            continue
        p = frame.patch
        own = video.frame_at(frame.index)[p.y : p.y + p.height, p.x : p.x + p.width]
        assert np.array_equal(p.pixels[0], own[0]), frame.index  # untouched top row
        others = {video.frame_number(frame.index)} ^ {0, 1, 2}
        for n in others:
            other = video.frames[n][p.y : p.y + p.height, p.x : p.x + p.width]
            assert not np.array_equal(p.pixels[0], other[0])
        checked += 1
    assert checked >= 5
    # The mouth follows the face: the rig of a shifted frame sits shifted.
    assert (engine.rig(2).x, engine.rig(2).y) != (engine.rig(0).x, engine.rig(0).y)


def test_an_avatar_without_a_face_is_an_engine_error() -> None:
    blank = np.full((360, 640, 3), 128, dtype=np.uint8)
    avatar = Avatar(frames=(blank,), source=Path("blank.png"), source_digest="test")
    with pytest.raises(EngineError, match="no face") as info:
        WarpEngine(avatar, FPS, RATE)
    assert "\n" not in str(info.value)


def test_bad_settings_and_bad_audio_are_clear_errors(engine: WarpEngine, avatar: Avatar) -> None:
    with pytest.raises(EngineError, match="fps"):
        WarpEngine(avatar, 0, RATE)
    utterance = engine.start_utterance()
    with pytest.raises(ValueError, match="slot 3"):
        utterance.feed([SpeechSlot(3, np.zeros((2, 10), dtype=np.int16))])
    with pytest.raises(ValueError, match="int16"):
        utterance.feed([SpeechSlot(4, np.zeros(10, dtype=np.float32))])


def test_engine_reports_itself(engine: WarpEngine) -> None:
    assert engine.name == "warp"
    assert 0.0 < engine.lead_seconds <= 0.2
