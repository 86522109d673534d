"""A minute of the real idle stream, read back: the default avatar blinks at a human rate and is
never still for long (blinks, breath and drift survive the encoder and the RTMP round trip)."""

from __future__ import annotations

import pytest
from support.liveliness import blinks, longest_still
from support.stream import decode_video_gray, record

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# the default avatar (assets/avatar.png, 512x512) fitted to 1280x720: where its eyes and head are
EYES = (538, 120, 118, 46)  # x, y, w, h around both eyes (landmarks 36-47 plus the lids' travel)
HEAD = (480, 20, 240, 300)  # face, hair and neck
FPS = 30


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
