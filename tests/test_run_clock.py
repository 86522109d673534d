"""The service's clock loop tells the operator when the process stalled past what the clock
catches up on: a counter on /metrics and one log line per stall."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest

from poc.app import Service
from poc.config import load_settings
from poc.media.clock import FrameClock

pytestmark = pytest.mark.anyio


async def test_a_stall_past_the_catch_up_is_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(environ={}, env_file=Path("/nonexistent"),
                             overrides={"RTMP_FPS": "10", "RTMP_RESOLUTION": "320x180"}, check_files=False)  # fmt: skip
    service = await anyio.to_thread.run_sync(Service, settings)
    now = [0.0]

    async def sleep_until(deadline: float) -> None:
        now[0] = max(now[0], deadline)
        if round(deadline * 10) == 20:  # frame 20: the process stalls for 5 s
            now[0] += 5.0
        await anyio.lowlevel.checkpoint()

    service.clock = FrameClock(10, max_catch_up=1.0, now=lambda: now[0], sleep_until=sleep_until)
    caplog.set_level(logging.WARNING, logger="poc.app")
    await service.run_clock(frames=60)
    assert service.metrics.registry.get_sample_value("poc_clock_rebases_total") == 1
    assert len([r for r in caplog.records if "media clock was stalled" in r.message]) == 1
