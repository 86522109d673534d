"""The plan's own settings file (tests/data/plan.env.dev, verbatim but for its paths) starts poc.

The file asks for MuseTalk on CUDA with weights in ./models/musetalk. On a machine with neither
(this one), poc still goes on air with the plan's idle picture, then says in one line what the
engine lacks and exits 2: a configuration it cannot honour is refused, never half-run."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support.processes import ROOT
from support.stream import probe, start_recording

from poc.bench.harness import ServiceProcess

pytestmark = pytest.mark.integration

PLAN_FILE = Path(__file__).resolve().parents[1] / "data" / "plan.env.dev"


def plan_with_paths_in(folder: Path) -> Path:
    """The plan's file with its ./assets and ./models paths pointing into `folder`."""
    (folder / "assets").mkdir()
    (folder / "models" / "musetalk").mkdir(parents=True)
    for name in ("default_avatar.png", "avatar.png"):
        shutil.copy(ROOT / "assets" / "avatar.png", folder / "assets" / name)
    subprocess.run(
        ["ffmpeg", "-v", "quiet", "-y", "-loop", "1", "-i", str(ROOT / "assets" / "avatar.png"), "-t", "1",
         "-r", "25", "-pix_fmt", "yuv420p", str(folder / "assets" / "avatar_video.mp4")],
        check=True,
    )  # fmt: skip
    text = PLAN_FILE.read_text().replace("./assets/", f"{folder}/assets/").replace("./models/", f"{folder}/models/")
    assert text.count(str(folder)) == 4  # its four paths, nothing else
    path = folder / "plan.env"
    path.write_text(text)
    return path


def test_the_plans_file_goes_on_air_and_says_what_its_engine_lacks(service_env, tmp_path):
    env_file = plan_with_paths_in(tmp_path)
    # The plan's RTMP URL is a placeholder (your-server.com); the test's server comes from the
    # environment, which outranks the file, as it would in a deployment.
    # The engine's verdict comes seconds after going on air, so the viewer is there first
    # (nginx-rtmp holds a viewer until the stream is published).
    recording = start_recording(service_env["RTMP_URL"], 2, tmp_path / "idle.mkv")
    service = ServiceProcess({**service_env, "POC_ENV_FILE": str(env_file)}, tmp_path / "service.log").start()
    try:
        service.wait_for_log(r"on air: streaming", timeout=60)
        code = service.wait(timeout=120)
        recording.wait(timeout=30)
    finally:
        service.kill()
        recording.kill()
    facts = probe(tmp_path / "idle.mkv")
    assert len(facts.video_pts) > 10 and facts.audio_samples > 0
    log = service.log_text()
    assert code == 2
    failure = re.search(r"^poc: cannot start: (.*)$", log, re.MULTILINE)  # the CLI's one line
    assert failure and "MuseTalk" in failure.group(1)
    assert "Traceback" not in log
    assert "TTS_" not in failure.group(1)  # the voice settings (edge-tts, inline comments) were fine
