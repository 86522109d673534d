"""A video avatar on air loops forward without bouncing: the real service streams the sway clip
(tests/support/sway_clip.py) and the stream a viewer pulls back is read frame by frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from support.stream import decode_video_gray, record
from support.sway_clip import write_sway_clip

from poc.face.avatar import load_avatar

pytestmark = pytest.mark.integration

W, H, FPS = 640, 360, 30
SMALL = (160, 90)


def small(grey: np.ndarray) -> np.ndarray:
    return cv2.resize(grey, SMALL, interpolation=cv2.INTER_AREA).astype(np.float32).reshape(-1)


def test_a_video_avatar_loops_forward_on_air(start_service, service_env, tmp_path):
    clip = write_sway_clip(tmp_path / "sway.avi", seconds=4.0, fps=FPS)
    service = start_service(
        STATIC_VIDEO_PATH=str(clip), RTMP_RESOLUTION=f"{W}x{H}", RTMP_FPS=str(FPS),
        IDLE_BLINKS="false", IDLE_MOTION="0",  # the loop alone: life is tested on its own
    )  # fmt: skip
    service.wait_for_log(r"avatar sway\.avi: loop of frames", timeout=90)
    service.wait_for_log(r"on air: streaming", timeout=60)
    shown = decode_video_gray(record(service_env["RTMP_URL"], 8, tmp_path / "loop.mkv"), W, H)
    assert len(shown) > 5 * FPS

    # The same plan the service made (the search is deterministic): which cycle position is each
    # read-back frame? The nearest of the cycle's pictures, through the encoder's noise.
    avatar = load_avatar(clip, W, H, fps=FPS, loop_cache=None)
    length = avatar.cycle_length
    cycle = np.stack([small(cv2.cvtColor(avatar.frame_at(p), cv2.COLOR_BGR2GRAY)) for p in range(length)])
    seen = np.stack([small(g) for g in shown])
    d2 = (seen * seen).sum(1)[:, None] + (cycle * cycle).sum(1)[None, :] - 2 * seen @ cycle.T
    positions = d2.argmin(axis=1)

    steps = np.diff(positions) % length
    assert (steps == 1).mean() >= 0.9, steps  # forward, one cycle position a frame
    assert (steps <= 2).all(), steps  # never backward (ping-pong would step back), never a jump

    plan = avatar.cycle.plan
    # One segment: its fade is the cycle's last `fade` positions, then the cycle starts again.
    joint = {p % length for p in range(length - plan.fade, length + 1)}
    change = np.abs(np.diff(shown.astype(np.int16), axis=0)).mean(axis=(1, 2))
    at_joint = [c for c, p in zip(change, positions[1:]) if p in joint]
    ordinary = [c for c, p in zip(change, positions[1:]) if p not in joint]
    assert len(at_joint) >= 2 * plan.fade  # at least two joints seen
    assert max(at_joint) <= np.percentile(ordinary, 99), (max(at_joint), np.percentile(ordinary, 99))
