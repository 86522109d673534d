"""The FFmpeg writer: raw frames and raw PCM in, H.264 + AAC in FLV out to the RTMP server.

ffmpeg runs as a child process (an argument list, never a shell) reading video on stdin and
audio on a second pipe. Timestamps come from counts: rawvideo at a fixed rate and s16le at a
fixed sample rate, so ffmpeg stamps frame k at k/fps and audio by samples written.

The writer is isolated from the clock by a small bounded queue: `offer` never blocks. If the
encoder or the network is slow the queue fills and frames are dropped (and counted) rather than
stalling the clock. If ffmpeg dies, refuses to connect, or stops reading (ffmpeg 5.1 sometimes
hangs after the server dies: every write has a deadline), the supervisor kills it and starts a
new one with back-off capped at 2 s; the clock never notices. An outage is logged once when it
starts and once when it ends, not once per retry.

A session is renewed on purpose before its stream time reaches 24.8 days: FLV stamps a tag with
31 bits of milliseconds, so at 2^31 ms the timestamps the RTMP server sees jump back by that
much, on every month-long run. After `rotate_after_s` (20 days) the writer finishes the FLV
cleanly and starts the next session at once, at the first moment the avatar is idle (`quiet`),
or regardless after `force_rotate_after_s` (24 days): one reconnect of about a second, at a
quiet moment, instead of a broken stream.

Audio goes through its own thread and pipe so a blocked video write can never starve ffmpeg of
audio (and vice versa); `-probesize 32 -analyzeduration 0` stops ffmpeg probing one pipe while
we block on the other at start-up.
"""

from __future__ import annotations

import contextvars
import fcntl
import logging
import os
import queue
import subprocess
import threading
import time
from typing import Callable

import cv2
import numpy as np

from poc.metrics import Metrics

log = logging.getLogger(__name__)

_STOP = None  # queue sentinel: flush and close
_ROTATE = "renew"  # _watch's answer when the session has been on air long enough to renew
DAY_S = 86400.0
# FLV's 31-bit millisecond timestamps wrap at 2**31 ms, 24.86 days of stream time.
ROTATE_AFTER_S = 20 * DAY_S
FORCE_ROTATE_AFTER_S = 24 * DAY_S


def ffmpeg_command(
    ffmpeg: str,
    url: str,
    width: int,
    height: int,
    fps: int,
    sample_rate: int,
    audio_fd: int,
    video_bitrate: str,
    audio_bitrate: str,
    keyframe_seconds: float,
    channels: int = 1,
) -> list[str]:
    """The ffmpeg argument list. The audio pipe is always mono; with channels=2 ffmpeg copies it
    into both channels (speech centred, at the mono level), so the clock's hot path writes
    half the bytes a stereo feed would and pays nothing for stereo."""
    gop = max(1, round(fps * keyframe_seconds))
    # pan, not a bare `-ac 2`: ffmpeg's own mono upmix puts the centre at -3 dB per channel.
    upmix = ["-af", "pan=stereo|c0=c0|c1=c0"] if channels == 2 else []
    raw_input = ["-probesize", "32", "-analyzeduration", "0", "-thread_queue_size", "64"]
    return [
        ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "warning",
        *raw_input, "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{width}x{height}",
        "-r", str(fps), "-i", "pipe:0",
        *raw_input, "-f", "s16le", "-ar", str(sample_rate), "-ac", "1", "-i", f"pipe:{audio_fd}",
        "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
        "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
        "-b:v", video_bitrate, "-maxrate", video_bitrate, "-bufsize", video_bitrate,
        *upmix, "-c:a", "aac", "-b:a", audio_bitrate, "-ar", str(sample_rate), "-ac", str(channels),
        "-f", "flv", "-flvflags", "no_duration_filesize", url,
    ]  # fmt: skip


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]



def _thread(target: Callable[[], None], name: str) -> threading.Thread:
    """A daemon thread that runs in a copy of the creator's context, so what it logs carries the
    station it works for (poc.host.CURRENT_STATION; a plain thread starts with an empty context)."""
    return threading.Thread(target=contextvars.copy_context().run, args=(target,), name=name, daemon=True)

class _Session:
    """One ffmpeg process and the two threads feeding it."""

    def __init__(
        self, command_for_fd: Callable[[int], list[str]], writer: "FfmpegWriter", frame_bytes: int
    ) -> None:
        self.writer = writer
        audio_read, self.audio_write = os.pipe()
        try:
            self.process = subprocess.Popen(
                command_for_fd(audio_read),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=(audio_read,),
                bufsize=0,
                start_new_session=True,  # a Ctrl-C to our terminal must not kill ffmpeg mid-flush
            )
        except BaseException:
            # The supervisor retries a failed spawn every couple of seconds for as long as it
            # fails: leaking the audio pipe each time would use up the process's descriptors.
            os.close(self.audio_write)
            raise
        finally:
            os.close(audio_read)
        self.frames_before_up = _frames_before_up(self.process.stdin.fileno(), frame_bytes)  # type: ignore[union-attr]
        self.error: str | None = None
        self.write_started: float | None = None  # when the current blocking write began
        self.frames_written = 0
        self.last_write = time.monotonic()
        self.video_queue: queue.Queue = queue.Queue(maxsize=writer.queue_frames)
        self.audio_queue: queue.Queue = queue.Queue(maxsize=writer.queue_frames * 4)
        self._threads = [
            _thread(self._feed_video, "ffmpeg-video"),
            _thread(self._feed_audio, "ffmpeg-audio"),
            _thread(self._read_errors, "ffmpeg-stderr"),
        ]
        for thread in self._threads:
            thread.start()

    def _feed_video(self) -> None:
        fd = self.process.stdin.fileno()  # type: ignore[union-attr]
        last_picture: np.ndarray | None = None
        planes = np.empty(0, np.uint8)
        try:
            while (picture := self.video_queue.get()) is not _STOP:
                # The encoder's own format, converted here rather than by ffmpeg: half the bytes
                # through the pipe, a faster conversion than ffmpeg 5.1's from bgr24, and none at
                # all for a picture offered again (a held idle frame is the same array; pictures
                # are never written to once offered).
                if picture is not last_picture:
                    planes = cv2.cvtColor(picture, cv2.COLOR_BGR2YUV_I420)
                    last_picture = picture
                self.write_started = time.monotonic()
                _write_all(fd, memoryview(planes).cast("B"))
                self.write_started = None
                self.frames_written += 1
                self.last_write = time.monotonic()
        except OSError as error:
            self.error = self.error or f"video pipe: {error.strerror or error}"
        finally:
            self.write_started = None
            _close_quietly(self.process.stdin)

    def _feed_audio(self) -> None:
        try:
            while (samples := self.audio_queue.get()) is not _STOP:
                _write_all(self.audio_write, memoryview(samples).cast("B"))
        except OSError as error:
            self.error = self.error or f"audio pipe: {error.strerror or error}"
        finally:
            try:
                os.close(self.audio_write)
            except OSError:
                pass

    def _read_errors(self) -> None:
        for raw in self.process.stderr:  # type: ignore[union-attr]
            line = raw.decode("utf-8", "replace").strip().replace(self.writer.url, self.writer.url_for_logs)
            if line:
                self.writer.last_ffmpeg_message = line
                log.debug("ffmpeg: %s", line)

    def offer(self, picture: np.ndarray, audio: np.ndarray) -> bool:
        # Both or neither: a picture queued without its audio would shift the sound against
        # the picture for the rest of the session.
        if self.video_queue.full() or self.audio_queue.full():
            return False
        self.video_queue.put_nowait(picture)
        self.audio_queue.put_nowait(audio)
        return True

    @property
    def through(self) -> bool:
        """True once more frames went in than ffmpeg's probe and the pipe could have taken
        without the RTMP connection being open."""
        return self.frames_written >= self.frames_before_up

    def stuck_for(self) -> float:
        started = self.write_started
        return 0.0 if started is None else time.monotonic() - started

    def finish(self, timeout: float) -> None:
        """Let ffmpeg drain what is queued and exit; kill it if it does not in time."""
        for q in (self.video_queue, self.audio_queue):
            try:
                q.put(_STOP, timeout=timeout)
            except queue.Full:
                pass
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.error("ffmpeg (pid %s) did not die after SIGKILL", self.process.pid)
        for q in (self.video_queue, self.audio_queue):  # unblock the feeder threads
            _drain(q)
            q.put_nowait(_STOP)
        for thread in self._threads:
            thread.join(timeout=2)


class FfmpegWriter:
    """Keeps one ffmpeg pushing to `url`, restarting it whenever it fails."""

    def __init__(
        self,
        ffmpeg: str,
        url: str,
        url_for_logs: str,
        width: int,
        height: int,
        fps: int,
        sample_rate: int,
        metrics: Metrics,
        video_bitrate: str = "2000k",
        audio_bitrate: str = "128k",
        keyframe_seconds: float = 2.0,
        queue_frames: int = 8,
        write_deadline: float = 2.0,
        max_backoff: float = 2.0,
        channels: int = 1,
        quiet: Callable[[], bool] = lambda: True,
        rotate_after_s: float = ROTATE_AFTER_S,
        force_rotate_after_s: float = FORCE_ROTATE_AFTER_S,
    ) -> None:
        """`quiet` says, from the supervisor's thread, whether now is a good moment to renew the
        session (nobody is talking); see the module docstring for the two rotate times."""
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, not {channels}")
        if not 0 < rotate_after_s <= force_rotate_after_s < 2**31 / 1000:
            raise ValueError("need 0 < rotate_after_s <= force_rotate_after_s < 2**31 ms")
        self.url = url
        self.url_for_logs = url_for_logs
        self.metrics = metrics
        self.queue_frames = queue_frames
        self.write_deadline = write_deadline
        self.max_backoff = max_backoff
        self.dropped = 0
        self.restarts = 0
        self.rotations = 0  # sessions renewed on purpose before FLV's timestamps wrap
        self._fps = fps
        self._quiet = quiet
        self._rotate_after_s = rotate_after_s
        self._force_rotate_after_s = force_rotate_after_s
        self.last_ffmpeg_message = ""
        self._command_for_fd = lambda fd: ffmpeg_command(
            ffmpeg, url, width, height, fps, sample_rate, fd, video_bitrate, audio_bitrate,
            keyframe_seconds, channels,
        )  # fmt: skip
        self._frame_bytes = width * height * 3 // 2  # yuv420p
        self._session: _Session | None = None
        self._outage_started: float | None = None
        self._been_on_air = False  # the first "on air" is said as such, whatever came before
        self._closing = threading.Event()
        self._close_timeout = 1.5
        self._first_session = threading.Event()
        self._supervisor = _thread(self._supervise, "ffmpeg-supervisor")
        # Off air on purpose (the `stop` control): no ffmpeg runs and none is restarted.
        self._off_air = threading.Event()
        self._off_air_done = threading.Event()  # set by the supervisor once ffmpeg has exited
        # Between a start and its ffmpeg running: still off air on purpose, so frames offered
        # meanwhile are refused without counting as dropped (set by start_output, cleared by the
        # supervisor once a session runs, or once starting one failed: that is an outage).
        self._starting = threading.Event()

    @property
    def up(self) -> bool:
        """True while frames are actually leaving: ffmpeg alive and writing in the last second."""
        session = self._session
        return (
            session is not None
            and session.process.poll() is None
            and session.through
            and time.monotonic() - session.last_write < 1.0
        )

    @property
    def in_outage(self) -> bool:
        """True from the moment a session failed (or the first could not reach the server)
        until frames leave again; not while off air on purpose. Read from any thread."""
        return self._outage_started is not None and not self._off_air.is_set()

    def start(self, off_air: bool = False) -> None:
        """Start the supervisor (it spawns ffmpeg) and wait, at most 2 s, for the first session;
        `off_air`: begin as stop_output leaves it (no ffmpeg until start_output). Blocking:
        from the event loop, run it in a worker thread (app.py does)."""
        if off_air:
            self._off_air.set()
        self._supervisor.start()
        if not off_air:
            self._first_session.wait(timeout=2.0)  # so the very first frames are not dropped

    @property
    def stopped(self) -> bool:
        """True while the output is off air on purpose: from stop_output until the ffmpeg that
        start_output asked for runs."""
        return self._off_air.is_set() or self._starting.is_set()

    def stop_output(self, timeout: float = 1.5) -> None:
        """Take the stream off air on purpose: what is queued is written, ffmpeg gets EOF on
        its inputs and finishes the FLV, so the RTMP server sees a clean unpublish. This is
        not an outage: nothing is restarted until start_output(). Blocks until ffmpeg has
        exited (killed after `timeout` s if it hangs). Idempotent."""
        self._close_timeout = timeout
        self._starting.clear()
        if not self._off_air.is_set():
            self._off_air_done.clear()
            self._off_air.set()
        self._off_air_done.wait(timeout=timeout + 1.0)

    def start_output(self, timeout: float = 2.0) -> None:
        """Back on air after stop_output: a new ffmpeg starts at once (no back-off). Returns
        once it runs (at most `timeout` s), so frames offered next are not dropped. Idempotent."""
        if not self._off_air.is_set():
            return
        self._first_session.clear()
        self._starting.set()
        self._off_air.clear()
        self._first_session.wait(timeout=timeout)

    def offer(self, picture: np.ndarray, audio: np.ndarray) -> bool:
        """Queue one frame and its audio; never blocks. False (and counted) if dropped."""
        if self._off_air.is_set() or self._starting.is_set():
            return False  # off air on purpose: not a drop
        session = self._session
        if session is not None and session.error is None and session.offer(picture, audio):
            return True
        self.dropped += 1
        self.metrics.dropped.inc()
        return False

    def close(self, timeout: float = 1.5) -> None:
        """Flush what is queued, let ffmpeg finish the FLV, and stop (at most ~timeout s)."""
        self._close_timeout = timeout
        self._closing.set()
        self._supervisor.join(timeout=timeout + 2)

    def _supervise(self) -> None:
        backoff = 0.25
        spawn_failing = False  # the last spawn failed (logged once until one succeeds)
        while not self._closing.is_set():
            if self._off_air.is_set():
                # Polled: a start or a close is noticed within 50 ms, and nothing else runs.
                while self._off_air.is_set() and not self._closing.is_set():
                    self._off_air_done.set()
                    self._closing.wait(0.05)
                backoff = 0.25
                continue
            try:
                session = _Session(self._command_for_fd, self, self._frame_bytes)
            except OSError as error:
                # Nothing leaves until one starts: an outage like any other (no message starts
                # meanwhile), said once, not once per retry.
                self._starting.clear()
                if self._outage_started is None:
                    self._outage_started = time.monotonic()
                if not spawn_failing:
                    spawn_failing = True
                    log.error("cannot start ffmpeg: %s; retrying every %g s", error, self.max_backoff)
                self.restarts += 1
                self.metrics.writer_restarts.inc()
                self._rest(self.max_backoff)
                continue
            spawn_failing = False
            self._session = session
            self._starting.clear()
            self._first_session.set()
            started = time.monotonic()
            reason = self._watch(session)
            if reason is None or reason is _ROTATE:
                # Closing, off air on purpose, or renewing the session: a clean finish, not an
                # outage; the loop then starts the next session at once unless off air.
                renewing = reason is _ROTATE
                if renewing:
                    self._session = None  # frames offered while it finishes count as dropped
                session.finish(timeout=self._close_timeout)
                if self._closing.is_set():
                    break
                self._session = None
                self.metrics.rtmp_up.set(0)
                self._outage_started = None  # a start after this is a new start, not a recovery
                if renewing:
                    self.rotations += 1
                    backoff = 0.25
                    log.info(
                        "RTMP session to %s renewed after %.1f days of stream time, before FLV's "
                        "timestamps wrap at 24.8 days (ffmpeg exit code %s)",
                        self.url_for_logs, session.frames_written / self._fps / DAY_S, session.process.returncode,
                    )  # fmt: skip
                else:
                    log.debug(
                        "RTMP output to %s closed on purpose: ffmpeg exit code %s",
                        self.url_for_logs, session.process.returncode,
                    )  # fmt: skip
                continue
            self._session = None
            session.kill()
            self.metrics.rtmp_up.set(0)
            if self._outage_started is None:
                self._outage_started = time.monotonic()
                log.warning(
                    "RTMP output to %s %s (%s); reconnecting with back-off up to %.0f s",
                    self.url_for_logs, "lost" if session.frames_written else "not available",
                    reason, self.max_backoff,
                )  # fmt: skip
            self.restarts += 1
            self.metrics.writer_restarts.inc()
            if time.monotonic() - started > 10:
                backoff = 0.25
            self._rest(backoff)
            backoff = min(self.max_backoff, backoff * 2)
        self.metrics.rtmp_up.set(0)
        self._off_air_done.set()

    def _rest(self, seconds: float) -> None:
        """The back-off between restarts, cut short by a close or a stop."""
        deadline = time.monotonic() + seconds
        while not self._off_air.is_set() and (left := deadline - time.monotonic()) > 0:
            if self._closing.wait(min(0.05, left)):
                return

    def _rotation_due(self, session: _Session) -> bool:
        on_air_s = session.frames_written / self._fps
        if on_air_s < self._rotate_after_s:
            return False
        if on_air_s >= self._force_rotate_after_s:
            return True
        try:
            return bool(self._quiet())
        except Exception:  # a fault in the hint must not end the session: wait for the hard limit
            log.exception("asking whether the stream is quiet failed")
            return False

    def _watch(self, session: _Session) -> str | None:
        """Wait until the session fails (returns why) or the writer closes or goes off air on
        purpose (returns None)."""
        announced = False
        while not self._closing.wait(0.1) and not self._off_air.is_set():
            if session.process.poll() is not None:
                return f"ffmpeg exited with code {session.process.returncode}: {self.last_ffmpeg_message}"
            if session.error:
                return session.error
            if session.stuck_for() > self.write_deadline:
                return f"ffmpeg stopped reading for {self.write_deadline:.0f} s"
            if self._rotation_due(session):
                return _ROTATE
            if not announced and session.through:
                announced = True
                self.metrics.rtmp_up.set(1)
                if self._outage_started is not None and self._been_on_air:
                    log.warning(
                        "RTMP output to %s is back after %.1f s",
                        self.url_for_logs, time.monotonic() - self._outage_started,
                    )  # fmt: skip
                elif self._outage_started is not None:  # on air at last, after failed first tries
                    log.warning(
                        "on air: streaming to %s (after %.1f s without the RTMP server)",
                        self.url_for_logs, time.monotonic() - self._outage_started,
                    )  # fmt: skip
                else:
                    log.info("on air: streaming to %s", self.url_for_logs)
                self._outage_started = None
                self._been_on_air = True
        return None


# Before ffmpeg 5.1 opens the RTMP connection it reads its probe: one frame, or its 32 KiB input
# buffer when frames are smaller; the pipe holds 64 KiB more. A server that refuses the
# connection still sees all that go in, so the output counts as up only once more went through
# than both could hold (and never before a handful of frames).
_FRAMES_BEFORE_UP = 5
_F_GETPIPE_SZ = 1032  # Linux's fcntl for a pipe's capacity in bytes
_READ_BEFORE_CONNECT = 2 * 32768  # ffmpeg's input buffer, twice for margin


def _frames_before_up(fd: int, frame_bytes: int) -> int:
    try:
        capacity = fcntl.fcntl(fd, _F_GETPIPE_SZ)
    except OSError:
        capacity = 65536  # Linux's default
    frame_bytes = max(1, frame_bytes)
    held_without_a_server = -(-(capacity + max(_READ_BEFORE_CONNECT, frame_bytes)) // frame_bytes)
    return max(_FRAMES_BEFORE_UP, held_without_a_server + 1)


def _drain(q: queue.Queue) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return


def _close_quietly(stream) -> None:
    try:
        stream.close()
    except OSError:
        pass
