"""A minute of the real idle stream, read back: the default avatar blinks at a human rate and is
never still for long (blinks, breath and drift survive the encoder and the RTMP round trip)."""

from __future__ import annotations

import numpy as np
import pytest
from support.stream import decode_video_gray, record

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# the default avatar (assets/avatar.png, 512x512) fitted to 1280x720: where its eyes and head are
EYES = (538, 120, 118, 46)  # x, y, w, h around both eyes (landmarks 36-47 plus the lids' travel)
HEAD = (480, 20, 240, 300)  # face, hair and neck
FPS = 30


def blinks(eyes: np.ndarray) -> list[int]:
    """Frames where a blink starts: the dark pixels of irises and pupils drop under 70 % of
    their usual (running median) count, as the lids cover them."""
    dark = (eyes < 70).reshape(len(eyes), -1).sum(axis=1).astype(float)
    usual = np.array([np.median(dark[max(0, i - 45) : i + 45]) for i in range(len(dark))])
    shut = dark < 0.7 * usual
    return [i for i in range(1, len(shut)) if shut[i] and not shut[i - 1]]


def longest_still(head: np.ndarray, threshold: float = 0.6) -> int:
    """The longest run of frames that all look like its first one (mean change under
    `threshold` grey levels), in frames."""
    longest, start = 0, 0
    base = head[0].astype(np.int16)
    for i in range(1, len(head)):
        if np.abs(head[i].astype(np.int16) - base).mean() >= threshold:
            longest, start, base = max(longest, i - start), i, head[i].astype(np.int16)
    return max(longest, len(head) - start)


def test_a_minute_of_idle_stream_blinks_and_breathes(start_service, service_env, tmp_path) -> None:
    service = start_service(IDLE_SEED="11")
    service.wait_for_log(r"the avatar lives from frame", timeout=90)
    recording = record(service_env["RTMP_URL"], 62, tmp_path / "idle.mkv", timeout=120)
    eyes = decode_video_gray(recording, 1280, 720, box=EYES)
    head = decode_video_gray(recording, 1280, 720, box=HEAD)
    minutes = len(eyes) / FPS / 60
    assert minutes > 0.95
    starts = blinks(eyes)
    rate = len(starts) / minutes
    assert 12 <= rate <= 24, f"{len(starts)} blinks in {minutes * 60:.0f} s at frames {starts}"
    assert longest_still(head) < 6 * FPS
