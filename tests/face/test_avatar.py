"""The avatar cycle: frames fitted to the output, played forward then backward, never jumping."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from poc.face.avatar import AvatarError, fit_to_canvas, load_avatar, load_avatars
from poc.paths import DEFAULT_AVATAR


def write_video(path: Path, count: int, size=(64, 48)) -> Path:
    # at load_avatar's default stream rate, so that each source frame is one stream frame
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, size)
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


def write_image(path: Path, colour: tuple[int, int, int], size=(100, 100)) -> Path:
    cv2.imwrite(str(path), np.full((size[1], size[0], 3), colour, np.uint8))
    return path


def test_two_different_avatars_are_both_fitted_to_the_output(tmp_path):
    idle_path = write_image(tmp_path / "idle.png", (0, 0, 200))
    talking_path = write_image(tmp_path / "talking.png", (200, 0, 0), size=(60, 120))
    idle, talking = load_avatars(idle_path, talking_path, 320, 180)
    assert idle is not talking
    assert idle.size == talking.size == (320, 180)
    assert idle.frame_at(0)[90, 160].tolist() == [0, 0, 200]
    assert talking.frame_at(0)[90, 160].tolist() == [200, 0, 0]
    assert (idle.source, talking.source) == (idle_path, talking_path)


def test_one_file_or_the_same_bytes_twice_is_one_shared_avatar(tmp_path):
    first = write_image(tmp_path / "a.png", (0, 120, 0))
    copy = tmp_path / "b.png"
    copy.write_bytes(first.read_bytes())
    for talking_path in (first, tmp_path / "." / "a.png", copy):
        idle, talking = load_avatars(first, talking_path, 64, 48)
        assert talking is idle  # the compositor then keeps the mouth-only blend


def test_the_idle_loop_setting_does_not_freeze_a_talking_video(tmp_path):
    still = write_image(tmp_path / "idle.png", (0, 0, 90))
    video = write_video(tmp_path / "talking.avi", 5)
    idle, talking = load_avatars(still, video, 64, 48, idle_max_frames=1)
    assert idle.cycle_length == 1 and talking.cycle_length == 8
    shared_idle, shared_talking = load_avatars(video, video, 64, 48, idle_max_frames=1)
    assert shared_talking is shared_idle and shared_idle.cycle_length == 1  # one avatar, as today


def test_a_missing_talking_avatar_says_so(tmp_path):
    idle_path = write_image(tmp_path / "idle.png", (0, 0, 90))
    with pytest.raises(AvatarError, match="not found"):
        load_avatars(idle_path, tmp_path / "nope.mp4", 64, 48)
