"""Always on air: the real service streams the idle avatar to the project's nginx, and what a
viewer pulls back is continuous, as configured, with audio covering the picture."""

import subprocess
import sys
import time

import pytest
from support.processes import ROOT
from support.stream import probe, record

pytestmark = pytest.mark.integration


def test_idle_stream_read_back_is_continuous_and_as_configured(start_service, service_env, tmp_path):
    service = start_service()  # defaults: 1280x720 at 30 fps, 44.1 kHz
    service.wait_for_log(r"on air: streaming", timeout=60)
    facts = probe(record(service_env["RTMP_URL"], 10, tmp_path / "idle.mkv"))

    assert (facts.width, facts.height) == (1280, 720)
    assert facts.fps == pytest.approx(30)
    assert facts.audio_rate == 44100
    span = facts.video_seconds
    assert span > 7  # a reader joins at the next keyframe (every 2 s)
    assert len(facts.video_pts) == pytest.approx(span * 30, rel=0.01)
    assert facts.largest_video_gap() <= 1.5 / 30
    # the audio track runs the whole time (idle is silence, not a hole) and ends with the video
    video_end = facts.video_pts[0] + span
    audio_end = facts.audio_start + facts.audio_seconds
    assert abs(audio_end - video_end) < 0.05
    assert facts.audio_start <= facts.video_pts[0] + 0.05
    status, _ = service.get("/healthz")
    assert status == 200


def test_other_resolution_and_fps_are_honoured(start_service, service_env, tmp_path):
    service = start_service(RTMP_RESOLUTION="640x360", RTMP_FPS="25", TTS_SAMPLE_RATE="48000")
    service.wait_for_log(r"on air: streaming", timeout=60)
    facts = probe(record(service_env["RTMP_URL"], 6, tmp_path / "small.mkv"))
    assert (facts.width, facts.height, facts.fps, facts.audio_rate) == (640, 360, 25, 48000)
    assert len(facts.video_pts) == pytest.approx(facts.video_seconds * 25, rel=0.01)


def test_stream_is_readable_soon_after_start(start_service, service_env):
    started = time.monotonic()
    start_service()
    deadline = started + 30  # generous: the 3 s goal is measured by `poc bench stream`
    while time.monotonic() < deadline:
        probe_run = subprocess.run(
            ["ffprobe", "-v", "error", "-rw_timeout", "3000000", "-show_entries", "stream=codec_type",
             "-of", "csv=p=0", service_env["RTMP_URL"]],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        if "video" in probe_run.stdout and "audio" in probe_run.stdout:
            return
        time.sleep(0.2)
    pytest.fail("stream not readable within 30 s of start")


def test_secrets_never_reach_the_log(start_service, rtmp_server, tmp_path):
    key = "sk_live_9f8e7d6c5b4a"
    service = start_service(RTMP_URL=f"{rtmp_server.base_url}/{key}", LOG_LEVEL="debug")
    service.wait_for_log(r"on air: streaming", timeout=60)
    status, metrics = service.get("/metrics")
    service.stop()
    assert status == 200
    assert key not in service.log_text()
    assert key not in metrics.decode()
    assert "live/***" in service.log_text()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"RTMP_FPS": "0"}, "RTMP_FPS"),
        ({"RTMP_RESOLUTION": "1279x720"}, "RTMP_RESOLUTION"),
        ({"TALKING_FACE_AVATAR_IMAGE": "/missing/face.png"}, "TALKING_FACE_AVATAR_IMAGE"),
        ({"FFMPEG_PATH": "/missing/ffmpeg"}, "FFMPEG_PATH"),
    ],
)
def test_bad_config_stops_startup_with_one_clear_line(env, named):
    result = subprocess.run(
        [sys.executable, "-m", "poc", "run"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "POC_ENV_FILE": "/nonexistent", **env},
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr


def test_musetalk_without_weights_is_a_clear_startup_error(start_service, tmp_path):
    service = start_service(TALKING_FACE_MODEL="musetalk", TALKING_FACE_MODEL_PATH=str(tmp_path))
    code = service.wait(timeout=120)
    log = service.log_text()
    assert code == 2, log[-2000:]
    assert "unet.pth" in log and "Traceback" not in log
