"""The FFmpeg writer's promises to the clock (media/writer.py), with the real ffmpeg and no RTMP
server: an output path whose folder does not exist yet stands for a server that is down, and a
TCP port that accepts and never answers stands for one that hangs.

What must hold: `offer` never blocks the clock, whatever ffmpeg does (frames are dropped and
counted instead); a failing output is restarted with a back-off that stops growing at its cap;
an outage is logged once when it starts and once when it ends, however many retries it takes;
the audio track has the channels asked for.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support.polling import wait_until

from poc.config import find_ffmpeg
from poc.media.writer import FfmpegWriter, ffmpeg_command
from poc.metrics import Metrics

FPS, RATE = 10, 8000


def make_writer(url: str, width: int = 64, height: int = 48, **options: float) -> FfmpegWriter:
    return FfmpegWriter(
        ffmpeg=find_ffmpeg(""), url=url, url_for_logs="the output", width=width, height=height,
        fps=FPS, sample_rate=RATE, metrics=Metrics(), queue_frames=8, **options,  # type: ignore[arg-type]
    )  # fmt: skip


def sample(writer: FfmpegWriter, name: str) -> float:
    return writer.metrics.registry.get_sample_value(name) or 0.0


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "poc.media.writer" and r.levelno >= logging.WARNING]


class Clock:
    """Offers a frame every few milliseconds from its own thread, as the media clock does."""

    def __init__(self, writer: FfmpegWriter, width: int = 64, height: int = 48) -> None:
        self.writer = writer
        self.picture = np.full((height, width, 3), 90, np.uint8)
        self.audio = np.zeros(RATE // FPS, np.int16)
        self.offered = self.accepted = 0
        self.longest_offer = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            started = time.monotonic()
            accepted = self.writer.offer(self.picture, self.audio)
            self.longest_offer = max(self.longest_offer, time.monotonic() - started)
            self.offered += 1
            self.accepted += accepted

    def __enter__(self) -> Clock:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def hanging_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP port that accepts connections and never says a word (an RTMP server that hangs):
    ffmpeg waits in its handshake and stops reading its input."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    server.shutdown(socket.SHUT_RDWR)
    server.close()
    thread.join(timeout=5)
    for conn in accepted:
        conn.close()


@pytest.mark.slow  # seconds of CPU: the full suite runs it, the fast lane does not
def test_offer_never_blocks_while_ffmpeg_stops_reading_and_drops_are_counted(hanging_server) -> None:
    port, connections = hanging_server
    # Frames larger than a pipe's buffer: the first one already blocks the feeding thread.
    writer = make_writer(f"rtmp://127.0.0.1:{port}/live/key", width=320, height=240, write_deadline=60)
    writer.start()
    try:
        with Clock(writer, 320, 240) as clock:
            # ffmpeg reads its inputs' first frames, then waits in the server's handshake
            wait_until(lambda: connections, timeout=10, step=0.05)
            offered, accepted = clock.offered, clock.accepted
            wait_until(lambda: clock.offered >= offered + 50, timeout=20, step=0.05)
        assert clock.longest_offer < 0.05, f"an offer blocked for {clock.longest_offer * 1000:.0f} ms"
        # Nothing leaves now: at most the queue and the frame being written are taken.
        assert clock.accepted - accepted <= 8 + 1
        assert writer.dropped == clock.offered - clock.accepted > 0
        assert sample(writer, "poc_dropped_frames_total") == writer.dropped
        assert sample(writer, "poc_rtmp_up") == 0
        wait_until(lambda: not writer.up, timeout=5, step=0.05)  # /healthz says so within ~1 s
    finally:
        started = time.monotonic()
        writer.close(timeout=0.5)
        assert time.monotonic() - started < 5, "close waited on the stuck ffmpeg"


@pytest.mark.slow  # seconds of CPU: the full suite runs it, the fast lane does not
def test_an_ffmpeg_that_stops_reading_is_replaced_after_the_write_deadline(hanging_server, caplog) -> None:
    port, connections = hanging_server
    caplog.set_level(logging.WARNING, logger="poc.media.writer")
    writer = make_writer(f"rtmp://127.0.0.1:{port}/live/key", width=320, height=240, write_deadline=0.5)
    writer.start()
    try:
        with Clock(writer, 320, 240):
            wait_until(lambda: writer.restarts >= 1 and len(connections) >= 2, timeout=15, step=0.05)
    finally:
        writer.close(timeout=0.5)
    [line] = warnings(caplog)  # one outage, however many stuck ffmpegs it took
    assert "the output lost" in line and "stopped reading" in line, line


@pytest.mark.slow  # seconds of CPU: the full suite runs it, the fast lane does not
def test_restarts_back_off_to_a_cap_and_an_outage_is_logged_once_each_way(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="poc.media.writer")
    folder = tmp_path / "not-yet"  # ffmpeg cannot open its output until this exists: "down"
    # Frames larger than a pipe's buffer, so that a write completes only once ffmpeg reads it
    # (tiny frames would fill the pipe of an ffmpeg about to fail and look like a recovery).
    writer = make_writer(str(folder / "out.flv"), width=320, height=240, max_backoff=0.1)
    writer.start()
    try:
        with Clock(writer, 320, 240):
            # Back-off 0.25 s, then capped at 0.1 s: 8 failures take a few seconds. Doubling
            # without the cap would rest 0.25 + 0.5 + ... + 16 s = 31.75 s before the 8th.
            wait_until(lambda: writer.restarts >= 8, timeout=20, step=0.05)
            assert not writer.up and sample(writer, "poc_rtmp_up") == 0
            assert writer.in_outage  # the pipeline starts no message while this holds
            folder.mkdir()  # the "server" is back
            # up once frames leave; the recovery is announced once a few went through
            wait_until(lambda: writer.up and sample(writer, "poc_rtmp_up") == 1, timeout=15, step=0.05)
            assert not writer.in_outage
            restarts = writer.restarts
    finally:
        writer.close()
    assert sample(writer, "poc_writer_restarts_total") == restarts
    lines = warnings(caplog)
    assert len(lines) == 2, lines  # one when it went, one when it came back: not one per retry
    assert "RTMP output to the output" in lines[0] and "reconnecting with back-off" in lines[0]
    # down from the very start: its end is the stream going on air for the first time
    assert "on air: streaming to the output (after" in lines[1]
    assert (folder / "out.flv").stat().st_size > 0


def refusing_port() -> int:
    """A local port nothing listens on: an RTMP server that is down (connection refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow  # seconds of CPU: the full suite runs it, the fast lane does not
@pytest.mark.parametrize("size", [(64, 48), (320, 240)], ids=["frames-smaller-than-the-pipe", "larger"])
def test_a_server_that_refuses_the_connection_is_never_reported_up(size: tuple[int, int]) -> None:
    # ffmpeg reads its probe frame (and the pipe takes a few small ones) before it connects, so
    # between each restart and its refused connection frames do go in; /healthz must not flap
    # to "on air" in those moments (a probe would see a dead station come and go).
    width, height = size
    writer = make_writer(f"rtmp://127.0.0.1:{refusing_port()}/live/key", width, height, max_backoff=0.05)
    writer.start()
    seen_up = 0
    try:
        with Clock(writer, width, height):
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                seen_up += writer.up
                time.sleep(0.002)
            assert writer.restarts >= 5, "the refused output was not retried"
    finally:
        writer.close(timeout=0.5)
    assert seen_up == 0, f"reported up {seen_up} times without a server"
    assert sample(writer, "poc_rtmp_up") == 0


def test_the_audio_pipe_is_mono_and_the_track_has_the_channels_asked_for() -> None:
    for channels in (1, 2):
        command = ffmpeg_command("ffmpeg", "rtmp://h/live/k", 64, 48, 30, 44100, 5, "1000k", "96k", 2.0, channels)
        pipe = command.index("pipe:5")
        assert command[pipe - 7 : pipe] == ["-f", "s16le", "-ar", "44100", "-ac", "1", "-i"]
        codec = command.index("-c:a")
        assert command[codec : codec + 8] == ["-c:a", "aac", "-b:a", "96k", "-ar", "44100", "-ac", str(channels)]
        if channels == 1:
            assert "-af" not in command
        else:  # both channels carry the mono speech as it is (no -3 dB split of a plain upmix)
            assert command[codec - 2 : codec] == ["-af", "pan=stereo|c0=c0|c1=c0"]


@pytest.mark.parametrize("channels", [0, 3, 6])
def test_other_channel_counts_are_refused(channels: int) -> None:
    with pytest.raises(ValueError, match="channels must be 1 or 2"):
        make_writer("unused.flv", channels=channels)


def test_a_keyframe_every_keyframe_seconds() -> None:
    command = ffmpeg_command("ffmpeg", "out.flv", 64, 48, 25, 8000, 5, "1000k", "96k", 2.0)
    assert command[command.index("-g") + 1] == command[command.index("-keyint_min") + 1] == "50"
