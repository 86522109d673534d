"""decode_video: a vendor's video as stream frames, on our frame rate and fitted like the avatar."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from poc.face.hosted import HostedFaceError, decode_video, iter_video
from poc.simulators.faces import MARK_SIZE, MARK_Y, find_mark, make_talking_video, mark_x

SOURCE = 512  # the simulator's videos are the 512x512 avatar


@pytest.fixture(scope="module")
def one_second(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """25 frames at 25 fps, the mark at x = 8*i in frame i."""
    path = tmp_path_factory.mktemp("video") / "talk25.mp4"
    path.write_bytes(make_talking_video(1.0, fps=25))
    return path


def _source_index(frame: np.ndarray, scale: float, offset_x: float) -> int:
    """Which source frame this is, read from where its mark sits."""
    mark = find_mark(frame)
    assert mark is not None
    left = (mark[0] - offset_x) / scale - MARK_SIZE / 2
    return round(left / 8)


def test_25_fps_becomes_30_fps_showing_the_frame_due_at_each_tick(one_second: Path) -> None:
    frames = decode_video(one_second, SOURCE, SOURCE, 30)
    assert len(frames) == 30  # one second either way
    shown = [_source_index(f, 1.0, 0.0) for f in frames]
    assert shown == [math.floor(k * 25 / 30) for k in range(30)]
    # 25 -> 30 repeats every fifth source frame: the same fitted picture, not a copy
    assert frames[0] is frames[1] and frames[6] is frames[7]


def test_30_fps_becomes_25_fps_dropping_frames_evenly(tmp_path: Path) -> None:
    path = tmp_path / "talk30.mp4"
    path.write_bytes(make_talking_video(1.0, fps=30))
    frames = decode_video(path, SOURCE, SOURCE, 25)
    assert len(frames) == 25
    assert [_source_index(f, 1.0, 0.0) for f in frames] == [math.floor(k * 30 / 25) for k in range(25)]


def test_60_fps_becomes_30_fps_showing_every_other_frame(tmp_path: Path) -> None:
    # A 60 fps vendor video (phones, some renderers): the frames between ticks are skipped
    # without being converted or fitted, and the ones shown are the ones due.
    path = tmp_path / "talk60.mp4"
    path.write_bytes(make_talking_video(0.5, fps=60))
    frames = decode_video(path, SOURCE, SOURCE, 30)
    assert len(frames) == 15
    assert [_source_index(f, 1.0, 0.0) for f in frames] == [2 * k for k in range(15)]


def test_frames_are_fitted_to_the_stream_like_the_avatar(one_second: Path) -> None:
    """A square video in a 16:9 stream: scaled to the full height and centred, the sides filled
    with a darkened blur of itself (no black bars, no stretching)."""
    width, height = 1280, 720
    frames = decode_video(one_second, width, height, 25)
    assert len(frames) == 25
    scale, offset = height / SOURCE, (width - height) / 2
    frame = frames[10]
    assert frame.shape == (height, width, 3) and frame.dtype == np.uint8
    mark = find_mark(frame)
    assert mark is not None
    assert mark[0] == pytest.approx(offset + (mark_x(10) + MARK_SIZE / 2) * scale, abs=2)
    assert mark[1] == pytest.approx((MARK_Y + MARK_SIZE / 2) * scale, abs=2)
    assert mark[2] == pytest.approx((MARK_SIZE * scale) ** 2, rel=0.15)  # square, not stretched
    side, centre = frame[:, : int(offset) - 4], frame[:, int(offset) + 4 : int(offset) + height - 4]
    assert side.mean() > 5, "black bars instead of the blurred fill"
    assert side.mean() < centre.mean(), "the fill is not darkened"
    assert not frame.flags.writeable


def test_iter_video_yields_the_same_frames_lazily(one_second: Path) -> None:
    lazy = iter_video(one_second, 320, 180, 30)
    first = next(lazy)
    rest = list(lazy)
    eager = decode_video(one_second, 320, 180, 30)
    assert len(rest) + 1 == len(eager)
    assert np.array_equal(first, eager[0]) and np.array_equal(rest[-1], eager[-1])


@pytest.mark.parametrize(
    "content", [b"", b"<html>502 Bad Gateway</html>" * 50, b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 4000]
)
def test_bytes_that_are_not_a_video_are_bad_video(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "result.mp4"
    path.write_bytes(content)
    with pytest.raises(HostedFaceError) as caught:
        decode_video(path, 1280, 720, 30)
    assert caught.value.kind == "bad_video" and "\n" not in str(caught.value)


def test_a_missing_file_is_bad_video(tmp_path: Path) -> None:
    with pytest.raises(HostedFaceError) as caught:
        decode_video(tmp_path / "gone.mp4", 1280, 720, 30)
    assert caught.value.kind == "bad_video"
