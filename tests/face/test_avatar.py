"""The avatar cycle: frames fitted to the output, played forward then backward, never jumping."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from poc.face.avatar import AvatarError, fit_to_canvas, load_avatar
from poc.paths import DEFAULT_AVATAR


def write_video(path: Path, count: int, size=(64, 48)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, size)
    for i in range(count):
        writer.write(np.full((size[1], size[0], 3), 20 * i + 10, dtype=np.uint8))
    writer.release()
    return path


def test_ping_pong_cycle_never_jumps(tmp_path):
    avatar = load_avatar(write_video(tmp_path / "loop.avi", 5), 64, 48)
    numbers = [avatar.frame_number(k) for k in range(20)]
    assert numbers == [0, 1, 2, 3, 4, 3, 2, 1] * 2 + [0, 1, 2, 3]
    assert all(abs(a - b) == 1 for a, b in zip(numbers, numbers[1:]))
    assert avatar.cycle_length == 8
    brightness = [int(avatar.frame_at(k).mean()) for k in range(8)]
    assert brightness == sorted(brightness[:5]) + sorted(brightness[5:], reverse=True)


def test_a_still_image_is_one_frame_forever():
    avatar = load_avatar(DEFAULT_AVATAR, 1280, 720)
    assert avatar.cycle_length == 1
    assert avatar.frame_at(0) is avatar.frame_at(12345)
    assert avatar.size == (1280, 720)


def test_frames_are_read_only_so_no_tick_can_paint_on_them():
    avatar = load_avatar(DEFAULT_AVATAR, 320, 180)
    with pytest.raises(ValueError):
        avatar.frames[0][0, 0, 0] = 1


def test_a_square_portrait_fills_a_wide_frame_without_distortion():
    portrait = np.zeros((100, 100, 3), np.uint8)
    portrait[:, :, 2] = 255
    canvas = fit_to_canvas(portrait, 320, 180)
    assert canvas.shape == (180, 320, 3)
    assert (canvas[:, 70:250, 2] == 255).all()  # the portrait, scaled to 180x180, centred
    assert canvas[:, :60, 2].max() < 255  # the sides are a darkened blur, not the portrait


def test_missing_or_unreadable_avatars_say_so(tmp_path):
    with pytest.raises(AvatarError, match="not found"):
        load_avatar(tmp_path / "nope.png", 64, 48)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(AvatarError, match="cannot read"):
        load_avatar(broken, 64, 48)
    empty_video = tmp_path / "empty.mp4"
    empty_video.write_bytes(b"")
    with pytest.raises(AvatarError, match="cannot read"):
        load_avatar(empty_video, 64, 48)


def test_max_frames_one_holds_the_first_frame(tmp_path):
    avatar = load_avatar(write_video(tmp_path / "loop.avi", 5), 64, 48, max_frames=1)
    assert avatar.cycle_length == 1
