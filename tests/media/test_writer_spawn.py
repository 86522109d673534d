"""The writer when ffmpeg cannot even be started (media/writer.py, `_Session`).

A spawn can fail for a while on a long run: the pids limit of a container reached (EAGAIN), no
memory to fork (ENOMEM), the binary replaced or on a mount that went away (ENOENT, EACCES). The
supervisor then retries every `max_backoff` seconds, for as long as it takes. What must hold: a
failed spawn gives back what it took, so retrying for hours does not use up the process's file
descriptors (then nothing could be opened again, not even once ffmpeg can start).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from support.polling import wait_until

from poc.media.writer import FfmpegWriter
from poc.metrics import Metrics

pytestmark = pytest.mark.slow  # each waits out ffmpeg start retries


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_a_failed_spawn_leaks_no_file_descriptors(tmp_path: Path) -> None:
    writer = FfmpegWriter(
        ffmpeg=str(tmp_path / "gone" / "ffmpeg"), url=str(tmp_path / "out.flv"), url_for_logs="the output",
        width=64, height=48, fps=10, sample_rate=8000, metrics=Metrics(), max_backoff=0.01,
    )  # fmt: skip
    before = open_fds()
    writer.start()
    try:
        wait_until(lambda: writer.restarts >= 40, timeout=20, step=0.05)  # each one a failed spawn
    finally:
        writer.close(timeout=0.5)  # no attempt in flight while counting (each holds a few)
    leaked = open_fds() - before
    assert leaked <= 0, f"{leaked} descriptors more after {writer.restarts} failed spawns"


def test_an_ffmpeg_that_cannot_be_started_is_an_outage_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing leaves while no ffmpeg runs: the pipeline must start no message (it would play to
    # nobody and be acked as played), and the log says so once, not once per retry.
    caplog.set_level(logging.INFO, logger="poc.media.writer")
    writer = FfmpegWriter(
        ffmpeg=str(tmp_path / "gone" / "ffmpeg"), url=str(tmp_path / "out.flv"), url_for_logs="the output",
        width=64, height=48, fps=10, sample_rate=8000, metrics=Metrics(), max_backoff=0.01,
    )  # fmt: skip
    writer.start()
    try:
        wait_until(lambda: writer.in_outage, timeout=5, step=0.05)
        attempts = writer.restarts
        wait_until(lambda: writer.restarts >= attempts + 20, timeout=20, step=0.05)  # still retrying
        assert writer.in_outage and not writer.up
    finally:
        writer.close(timeout=0.5)
    lines = [r.getMessage() for r in caplog.records if r.name == "poc.media.writer" and r.levelno >= logging.WARNING]
    assert len(lines) == 1, lines[:3]
    assert "cannot start ffmpeg" in lines[0] and "No such file" in lines[0], lines[0]
