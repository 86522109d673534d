"""What the talking-face simulators share: jobs that take a few polls, and real videos.

A hosted face vendor takes audio, works on a job for a while and hands back an mp4. Each
simulator (did.py, tavus.py, hedra.py) speaks its vendor's endpoints and field names; this
module gives them the common parts:
- `make_talking_video`: a REAL H.264 mp4 made with ffmpeg from the avatar image at 25 fps,
  as long as the audio (which it carries, as vendors' results do), with a magenta square that
  moves MARK_STEP pixels right every frame, so a test can find the vendor's frames on the
  stream and tell which source frame it sees (`find_mark`);
- `FaceJob` and `FaceVendorServer`: the key check (401), a planned HTTP fault per request
  (`faults`: an int status; a 429 says `Retry-After: retry_after`), and the job plan for
  jobs made from now on (`job_plan`): "ok", "fail" (the vendor's error status), "never"
  (working forever), "bad_video" (the result URL serves bytes that are not a video),
  "short_video" / "long_video" (a real video SHORT_FACTOR / LONG_FACTOR times as long as the
  audio, as a vendor that trims or pads its result sends). `video_size` (width, height)
  renders the avatar at another size than its own, as vendors do. A job reports its working
  statuses over `polls_to_finish` polls, then its end.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import itertools
import shutil
import subprocess
import tempfile
import threading
import uuid
import wave
from pathlib import Path
from typing import Any

import numpy as np

from poc.paths import DEFAULT_AVATAR
from poc.simulators.base import Recorded, Request, VendorServer

VIDEO_FPS = 25
MARK_BGR = (255, 0, 255)  # magenta: absent from the avatar, survives H.264's chroma subsampling
MARK_SIZE = 32
MARK_STEP = 8  # pixels right per frame
MARK_Y = 24
NOT_A_VIDEO = b"<html><body>this is not a video</body></html>\n" * 20

JOB_PLANS = ("ok", "fail", "never", "bad_video", "short_video", "long_video")
SHORT_FACTOR = 0.5  # "short_video": half the audio
LONG_FACTOR = 1.5  # "long_video": half as long again


def make_talking_video(
    duration: float,
    *,
    fps: int = VIDEO_FPS,
    avatar: Path = DEFAULT_AVATAR,
    wav: bytes | None = None,
    size: tuple[int, int] | None = None,
) -> bytes:
    """An mp4 of `avatar` lasting `duration` seconds (round(duration*fps) frames, at least one)
    with the moving mark; with `wav`, the audio track too; with `size`, the avatar scaled to
    that width and height (the mark keeps its size and moves across the new width)."""
    frames = max(1, round(duration * fps))
    with tempfile.TemporaryDirectory(prefix="poc-sim-video-") as folder:
        out = Path(folder) / "talk.mp4"
        command = [
            _ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-loop", "1", "-framerate", str(fps), "-i", str(avatar),
            "-f", "lavfi", "-i", f"color=c=0xFF00FF:s={MARK_SIZE}x{MARK_SIZE}:r={fps}",
        ]  # fmt: skip
        if wav is not None:
            audio = Path(folder) / "speech.wav"
            audio.write_bytes(wav)
            command += ["-i", str(audio)]
        scaled = f"[0:v]scale={size[0]}:{size[1]}[avatar];[avatar]" if size else "[0:v]"
        # x from the frame's time (t*fps = its index): frame i has the mark at i*MARK_STEP
        command += [
            "-filter_complex",
            f"{scaled}[1:v]overlay=x='mod(round(t*{fps})*{MARK_STEP},W-w)':y={MARK_Y}:shortest=1,"
            "format=yuv420p[v]",
            "-map", "[v]", "-frames:v", str(frames),
            "-c:v", "libx264", "-preset", "ultrafast", "-r", str(fps),
        ]  # fmt: skip
        if wav is not None:
            command += ["-map", "2:a", "-c:a", "aac", "-t", f"{frames / fps:.3f}"]
        command += ["-movflags", "+faststart", str(out)]
        result = subprocess.run(command, capture_output=True, timeout=120, check=False)
        if result.returncode != 0 or not out.is_file():
            raise RuntimeError(f"ffmpeg could not make the simulator video: {result.stderr[-300:]!r}")
        return out.read_bytes()


def _ffmpeg() -> str:
    """ffmpeg on PATH, else imageio-ffmpeg's (a test tool: FFMPEG_PATH is the service's setting)."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def mark_x(source_index: int, width: int = 512) -> int:
    """Left edge of the mark in source frame `source_index` of a video `width` pixels wide."""
    return (source_index * MARK_STEP) % (width - MARK_SIZE)


def find_mark(frame: np.ndarray) -> tuple[float, float, int] | None:
    """(x centre, y centre, pixel count) of the magenta mark in a BGR frame, None if absent."""
    b, g, r = (frame[:, :, i].astype(np.int16) for i in range(3))
    mask = (b > 180) & (r > 180) & (g < 90)
    ys, xs = np.nonzero(mask)
    if len(xs) < 16:
        return None
    return float(xs.mean()), float(ys.mean()), int(len(xs))


def wav_duration(data: bytes) -> float:
    """Seconds of audio in a WAV file; ValueError when it is not one."""
    try:
        with wave.open(io.BytesIO(data)) as source:
            rate, frames = source.getframerate(), source.getnframes()
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a WAV file: {exc}") from None
    if rate <= 0:
        raise ValueError("WAV file with no sample rate")
    return frames / rate


def wav_samples(data: bytes) -> tuple[np.ndarray, int]:
    """int16 samples (mono or first channel) and rate of a 16-bit WAV file."""
    with wave.open(io.BytesIO(data)) as source:
        channels, rate = source.getnchannels(), source.getframerate()
        raw = source.readframes(source.getnframes())
    samples = np.frombuffer(raw, dtype="<i2").reshape(-1, channels)[:, 0]
    return samples.copy(), rate


def multipart_files(recorded: Recorded) -> dict[str, tuple[str, bytes]]:
    """The parts of a multipart/form-data request: field name -> (filename, bytes)."""
    content_type = recorded.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return {}
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + recorded.body
    )
    parts: dict[str, tuple[str, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            payload = part.get_payload(decode=True) or b""
            parts[str(name)] = (part.get_filename() or "", payload)
    return parts


class FaceJob:
    """One job: its plan, its polls so far, and its video once rendered."""

    def __init__(
        self, job_id: str, plan: str, polls_to_finish: int, wav: bytes | None, size: tuple[int, int] | None = None
    ) -> None:
        self.id = job_id
        self.size = size
        self.plan = plan
        self.polls_to_finish = polls_to_finish
        self.polls = 0
        self.wav = wav
        self.video: bytes | None = None
        self.rendered = threading.Event()
        if plan not in ("fail", "never"):
            threading.Thread(target=self._render, name=f"render-{job_id}", daemon=True).start()

    def _render(self) -> None:
        try:
            if self.plan == "bad_video":
                self.video = NOT_A_VIDEO
            else:
                duration = wav_duration(self.wav) if self.wav else 1.0
                duration *= {"short_video": SHORT_FACTOR, "long_video": LONG_FACTOR}.get(self.plan, 1.0)
                self.video = make_talking_video(duration, wav=self.wav, size=self.size)
        finally:
            self.rendered.set()

    def poll(self) -> str:
        """Advance one poll; "working", "done" or "failed" as this poll sees it."""
        self.polls += 1
        if self.plan == "never" or self.polls < self.polls_to_finish:
            return "working"
        if self.plan == "fail":
            return "failed"
        # a video still rendering keeps the job working, as a real vendor's would
        return "done" if self.rendered.is_set() and self.video else "working"


class FaceVendorServer(VendorServer):
    """Shared state and checks; subclasses add their vendor's routes and field names."""

    results_prefix = "/results"
    unauthorized = (401, "Unauthorized: missing or invalid API key")  # a vendor's answer to a bad key

    def __init__(self, api_key: str = "sim-key", *, polls_to_finish: int = 3) -> None:
        super().__init__()
        self.api_key = api_key
        self.polls_to_finish = polls_to_finish
        self.job_plan = "ok"
        self.video_size: tuple[int, int] | None = None  # (width, height); None: the avatar's own
        self.retry_after = "0"  # what a planned 429 says in Retry-After (seconds, or an HTTP date)
        self.jobs: dict[str, FaceJob] = {}
        self._ids = itertools.count(1)

    @property
    def api_url(self) -> str:
        """The base URL a client is given (TALKING_FACE_API_URL)."""
        return self.url

    def new_id(self, prefix: str = "") -> str:
        return f"{prefix}{next(self._ids):04d}{uuid.uuid4().hex[:8]}"

    def start_job(self, job_id: str, wav: bytes | None) -> FaceJob:
        if self.job_plan not in JOB_PLANS:
            raise ValueError(f"job_plan must be one of {JOB_PLANS}")
        job = FaceJob(job_id, self.job_plan, self.polls_to_finish, wav, self.video_size)
        self.jobs[job_id] = job
        return job

    def result_url(self, job: FaceJob) -> str:
        return f"{self.url}{self.results_prefix}/{job.id}.mp4"

    # -- checks a route runs first: True when it already answered ------------------------------

    def authorized(self, request: Request) -> bool:
        raise NotImplementedError

    def send_error(
        self, request: Request, status: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        """The vendor's error body shape; subclasses override."""
        request.send_json(status, {"message": message}, headers)

    def refused(self, request: Request) -> bool:
        """Answer a planned fault or a bad key; True if answered."""
        fault = self.next_fault()
        if isinstance(fault, int):
            headers = {"Retry-After": self.retry_after} if fault == 429 else None
            self.send_error(request, fault, f"simulated HTTP {fault}", headers)
            return True
        if not self.authorized(request):
            self.send_error(request, *self.unauthorized)
            return True
        return False

    def serve_result(self, request: Request, job_id: str) -> None:
        """The result file, as the vendor's storage serves it: no key needed."""
        job = self.jobs.get(job_id)
        if job is None or not job.rendered.is_set() or not job.video:
            request.send_bytes(404, b"NoSuchKey", "text/plain")
            return
        request.send_bytes(200, job.video, "video/mp4")


def json_object(request: Request) -> dict[str, Any] | None:
    try:
        body = request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
