"""The writer's deliberate stop and start, with the real ffmpeg writing FLV to a file.

What must hold: a stop flushes every queued frame and lets ffmpeg finish the file (the clean
close an RTMP server sees as an unpublish), is not an outage (no restart, no dropped frames),
and keeps ffmpeg down until a start; a start runs a new ffmpeg at once.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from support.stream import ffprobe

from poc.config import find_ffmpeg
from poc.media.writer import FfmpegWriter
from poc.metrics import Metrics

W, H, FPS, RATE = 64, 48, 10, 8000


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def feed(writer: FfmpegWriter, frames: int) -> None:
    """Offer `frames` frames, waiting for room instead of letting the queue drop any."""
    picture = np.full((H, W, 3), 128, np.uint8)
    audio = np.zeros(RATE // FPS, np.int16)
    sent = 0
    deadline = time.monotonic() + 20
    while sent < frames:
        session = writer._session  # noqa: SLF001 - only to wait for room, never to decide
        if session is not None and not session.video_queue.full():
            assert writer.offer(picture, audio)
            sent += 1
        else:
            assert time.monotonic() < deadline
            time.sleep(0.005)


def video_frames(path: Path) -> int:
    out = subprocess.run(
        [ffprobe(), "-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries",
         "stream=nb_read_packets", "-of", "csv=p=0", str(path)],
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    return int(out.strip())


@pytest.fixture
def writer(tmp_path: Path):
    metrics = Metrics()
    out = tmp_path / "out.flv"
    w = FfmpegWriter(
        ffmpeg=find_ffmpeg(""), url=str(out), url_for_logs="out.flv", width=W, height=H, fps=FPS,
        sample_rate=RATE, metrics=metrics, queue_frames=8,
    )  # fmt: skip
    w.start()
    yield w
    w.close()


def gauge(writer: FfmpegWriter, name: str) -> float | None:
    return writer.metrics.registry.get_sample_value(name)


@pytest.mark.slow  # seconds of CPU: the full suite runs it, the fast lane does not
def test_stop_flushes_finishes_the_file_and_is_not_an_outage(writer: FfmpegWriter, tmp_path: Path):
    out = tmp_path / "out.flv"
    feed(writer, 30)
    wait_for(lambda: writer.up)
    ffmpeg = writer._session.process  # noqa: SLF001

    started = time.monotonic()
    writer.stop_output()
    assert time.monotonic() - started < 2.5
    assert ffmpeg.poll() == 0  # EOF on its inputs: ffmpeg finished on its own, not killed
    assert writer.stopped and not writer.up
    assert video_frames(out) == 30  # every queued frame went out before the close
    assert writer.restarts == 0 and writer.dropped == 0
    assert gauge(writer, "poc_rtmp_up") == 0
    assert gauge(writer, "poc_writer_restarts_total") == 0

    # Frames offered while stopped are refused, and are not counted as drops.
    assert writer.offer(np.zeros((H, W, 3), np.uint8), np.zeros(RATE // FPS, np.int16)) is False
    assert writer.dropped == 0
    # Nothing restarts it: across more than the longest back-off, no new ffmpeg writes the file.
    out.rename(tmp_path / "first.flv")
    deadline = time.monotonic() + writer.max_backoff + 0.5
    while time.monotonic() < deadline:
        assert not out.exists() and writer._session is None  # noqa: SLF001
        time.sleep(0.05)
    writer.stop_output()  # a second stop changes nothing and returns at once
    assert writer.restarts == 0


def test_start_runs_a_new_ffmpeg_at_once_and_close_works_while_stopped(writer: FfmpegWriter, tmp_path: Path):
    out = tmp_path / "out.flv"
    feed(writer, 5)
    writer.stop_output()
    out.rename(tmp_path / "first.flv")

    started = time.monotonic()
    writer.start_output()
    took = time.monotonic() - started
    assert not writer.stopped
    assert took < 1.0, took  # the supervisor polls every 50 ms; no back-off applies
    feed(writer, 40)  # tiny frames: more than ffmpeg and the pipe take before connecting (the writer calls that up)
    wait_for(lambda: writer.up)
    writer.start_output()  # on air already: nothing happens
    writer.stop_output()
    assert video_frames(out) == 40
    assert writer.restarts == 0 and writer.dropped == 0

    started = time.monotonic()
    writer.close()
    assert time.monotonic() - started < 1.0
    assert not writer._supervisor.is_alive()  # noqa: SLF001


def renewing_writer(out: Path, quiet, rotate_after_s: float, force_rotate_after_s: float) -> FfmpegWriter:
    return FfmpegWriter(
        ffmpeg=find_ffmpeg(""), url=str(out), url_for_logs="out.flv", width=W, height=H, fps=FPS,
        sample_rate=RATE, metrics=Metrics(), queue_frames=8, quiet=quiet,
        rotate_after_s=rotate_after_s, force_rotate_after_s=force_rotate_after_s,
    )  # fmt: skip


@pytest.mark.slow  # seconds of CPU: the full suite runs it, the fast lane does not
def test_a_long_session_is_renewed_cleanly_at_the_first_quiet_moment(tmp_path: Path):
    """FLV's timestamps wrap at 24.8 days: a session is renewed before that (here after 1 s of
    stream time), waiting for a moment nobody talks, with a clean finish and no outage."""
    out = tmp_path / "out.flv"
    quiet = threading.Event()
    writer = renewing_writer(out, quiet.is_set, rotate_after_s=1.0, force_rotate_after_s=60.0)
    writer.start()
    try:
        feed(writer, 30)  # 3 s of stream time while someone talks
        first = writer._session.process  # noqa: SLF001
        time.sleep(0.5)  # the supervisor looks every 0.1 s
        assert writer.rotations == 0 and first.poll() is None
        quiet.set()
        wait_for(lambda: writer.rotations == 1)
        quiet.clear()  # the new session must not be renewed in turn while the test reads it
        assert first.poll() == 0  # EOF on its inputs: ffmpeg finished the FLV on its own
        assert writer.restarts == 0
        out.rename(tmp_path / "first.flv")
        feed(writer, 40)  # tiny frames: more than ffmpeg and the pipe take before connecting
        wait_for(lambda: writer.up)
        writer.stop_output()
        assert video_frames(tmp_path / "first.flv") == 30
        assert video_frames(out) == 40  # the next session started at once and took every frame
        assert writer.restarts == 0
    finally:
        writer.close()


@pytest.mark.slow
def test_a_session_is_renewed_before_the_wrap_even_if_never_quiet(tmp_path: Path):
    out = tmp_path / "out.flv"
    writer = renewing_writer(out, lambda: False, rotate_after_s=1.0, force_rotate_after_s=2.0)
    writer.start()
    try:
        feed(writer, 15)
        time.sleep(0.5)
        assert writer.rotations == 0  # 1.5 s: past the first time, but nobody was ever quiet
        feed(writer, 10)
        wait_for(lambda: writer.rotations == 1)
        assert writer.restarts == 0
    finally:
        writer.close()


@pytest.mark.parametrize("after, force", [(0.0, 1.0), (2.0, 1.0), (1.0, 25 * 86400.0)])
def test_rotate_times_that_would_not_beat_the_wrap_are_refused(after: float, force: float):
    with pytest.raises(ValueError, match="2\\*\\*31 ms"):
        renewing_writer(Path("x.flv"), lambda: True, after, force)


def test_frames_offered_while_a_start_brings_ffmpeg_up_are_not_counted_as_dropped(writer: FfmpegWriter):
    """The clock keeps ticking while `start` waits for the new ffmpeg, and offers each frame once
    the writer says it is no longer stopped, as app.run_clock does. Until that ffmpeg runs the
    stream is still off air on purpose: nothing is lost, so nothing may be counted as dropped
    (the operator's dashboard read one dropped frame per `start`)."""
    feed(writer, 5)
    writer.stop_output()
    picture = np.zeros((H, W, 3), np.uint8)
    audio = np.zeros(RATE // FPS, np.int16)
    starting = threading.Thread(target=writer.start_output)
    starting.start()
    while starting.is_alive():  # a fast clock: many offers while ffmpeg starts
        if not writer.stopped:
            writer.offer(picture, audio)
        time.sleep(0.002)
    starting.join()
    assert not writer.stopped
    assert writer.dropped == 0
