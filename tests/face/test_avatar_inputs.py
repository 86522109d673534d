"""Avatars as users supply them: phone-sized videos, odd frame rates, files that are not what
their name says. Loading one must cost memory in proportion to the stream's frames, not the
source's, and play the clip at its own speed."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import cv2
import numpy as np

from poc.face.avatar import load_avatar, load_avatars
from poc.paths import DEFAULT_AVATAR


def write_clip(path: Path, count: int, size: tuple[int, int], fps: float) -> Path:
    """`count` frames of the default portrait at `size`, each shifted one more pixel."""
    portrait = cv2.resize(cv2.imread(str(DEFAULT_AVATAR), cv2.IMREAD_COLOR), size)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    try:
        for k in range(count):
            writer.write(np.roll(portrait, k, axis=1))
    finally:
        writer.release()
    return path


def test_a_full_hd_clip_does_not_sit_in_memory_at_its_own_size(tmp_path: Path):
    """40 frames of 1920x1080 are 250 MB decoded; fitted to 320x180 they are 7 MB. Holding
    every source frame until all are read scales with the source (a 600-frame 4K phone clip:
    15 GB, and the OOM killer takes every station with it)."""
    clip = write_clip(tmp_path / "phone.avi", 40, (1920, 1080), 30)
    tracemalloc.start()
    try:
        avatar = load_avatar(clip, 320, 180, fps=30, loop_cache=None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(avatar.frames) == 40
    assert peak < 100e6, f"loading took {peak / 1e6:.0f} MB at its peak"


def write_numbered_clip(path: Path, count: int, fps: float, size: tuple[int, int] = (64, 48)) -> Path:
    """Frame k is a flat grey of level 2k + 11: which source frame is shown can be read back."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    try:
        for k in range(count):
            writer.write(np.full((size[1], size[0], 3), 2 * k + 11, np.uint8))
    finally:
        writer.release()
    return path


def source_frames_shown(avatar) -> list[int]:
    return [round((float(frame.mean()) - 10) / 2) for frame in avatar.frames]  # MJPG decodes ~1.3 darker


def test_a_60_fps_clip_plays_at_its_own_speed_on_a_30_fps_stream(tmp_path: Path):
    """2 s of a 60 fps phone clip are 2 s on air (every other frame), not 1 s at double speed."""
    clip = write_numbered_clip(tmp_path / "phone60.avi", 120, 60)
    avatar = load_avatar(clip, 64, 48, fps=30, loop_cache=None)
    assert source_frames_shown(avatar) == list(range(0, 120, 2))


def test_a_25_fps_clip_plays_at_its_own_speed_on_a_30_fps_stream(tmp_path: Path):
    """Every fifth source frame is shown twice (the same picture, not a copy)."""
    clip = write_numbered_clip(tmp_path / "camera25.avi", 50, 25)
    avatar = load_avatar(clip, 64, 48, fps=30, loop_cache=None)
    assert source_frames_shown(avatar) == [k * 25 // 30 for k in range(60)]
    assert avatar.frames[0] is avatar.frames[1]


def test_the_frame_limit_counts_stream_frames(tmp_path: Path):
    """max_frames bounds the memory held: stream frames, whatever the clip's own rate."""
    clip = write_numbered_clip(tmp_path / "phone60.avi", 120, 60)
    avatar = load_avatar(clip, 64, 48, max_frames=10, fps=30, loop_cache=None)
    assert source_frames_shown(avatar) == list(range(0, 20, 2))


def test_prepared_data_of_one_clip_at_two_rates_is_kept_apart(tmp_path: Path):
    """MuseTalk's preparation and the loop plan are cached by `source_digest`: one clip at two
    stream rates is two sets of frames, while a clip at the stream's own rate (or 29.97 on 30)
    keeps the file's digest, so what was prepared before stays valid."""
    clip = write_numbered_clip(tmp_path / "clip.avi", 60, 30)
    at_30, at_25 = (load_avatar(clip, 64, 48, fps=rate, loop_cache=None) for rate in (30, 25))
    assert at_30.source_digest == at_30.file_sha256 == at_25.file_sha256
    assert at_25.source_digest != at_30.source_digest
    ntsc = write_numbered_clip(tmp_path / "ntsc.avi", 60, 29.97)
    avatar = load_avatar(ntsc, 64, 48, fps=30, loop_cache=None)
    assert source_frames_shown(avatar) == list(range(60)) and avatar.source_digest == avatar.file_sha256


def test_a_retimed_clip_and_a_copy_of_it_are_one_avatar(tmp_path: Path):
    clip = write_numbered_clip(tmp_path / "a.avi", 50, 25)
    copy = tmp_path / "b.avi"
    copy.write_bytes(clip.read_bytes())
    idle, talking = load_avatars(clip, copy, 64, 48, fps=30, loop_cache=None)
    assert talking is idle


def test_a_one_frame_clip_or_a_tiff_still_is_one_frame(tmp_path: Path):
    """Retiming never runs past the clip's end: one 25 fps frame lasts 40 ms, under two ticks
    at 30 fps. (A .tif still is read as a one-frame clip at 25 fps.)"""
    single = write_numbered_clip(tmp_path / "single.avi", 1, 25)
    still = tmp_path / "portrait.tif"
    cv2.imwrite(str(still), cv2.imread(str(DEFAULT_AVATAR), cv2.IMREAD_COLOR))
    for path in (single, still):
        avatar = load_avatar(path, 64, 48, fps=30, loop_cache=None)
        assert len(avatar.frames) == avatar.cycle_length == 1, path.name
