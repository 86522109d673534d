"""Every row of the README's configuration table, given bad values, stops `python -m poc run`
with exit code 2 and one line that names the setting: no traceback, no secret.

The real `run` path runs each time (a subprocess, nothing skipped): values checked when the
settings load, files and voices checked while the service is built, engines and voices that
fail after the stream went on air. RabbitMQ and the RTMP server point at ports where nothing
listens, so nothing real is needed; the broker being away is not a start-up error, so every
case that does not stop with a line would run on (and time out).

The settings come from the README's table: a row added without cases here fails the test.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs
import pytest

from poc.config import env_names
from support.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
CASE_TIMEOUT_S = 120  # an engine case imports torch on a shared 2-core machine
WORKERS = 4

# Secrets every case carries; none may appear in any output.
STREAM_KEY = "live_" + uuid.uuid4().hex[:16]
PASSWORD = "pw-" + uuid.uuid4().hex[:14]
TTS_KEY = "sk-" + uuid.uuid4().hex
FACE_KEY = "fk-" + uuid.uuid4().hex
STUDIO_TOKEN = "st-" + uuid.uuid4().hex
SECRETS = (STREAM_KEY, PASSWORD, TTS_KEY, FACE_KEY, STUDIO_TOKEN)


@attrs.frozen
class Case:
    setting: str  # the README row's env name the line must name
    kind: str  # what is wrong: wrong type, out of range, unknown name, missing file, ...
    env: dict[str, str]


def readme_settings() -> list[str]:
    """Every env name in the first column of README.md's "## Configuration" table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    names = []
    for line in section.splitlines():
        if line.startswith("| `"):
            names += re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1])
    return names


# Settings no value of which stops start-up, and why: each is free text that only a remote
# party can judge, and its refusal is survived on air (reported per message or per reconnect).
NO_BAD_VALUE = {
    "RABBITMQ_PASSWORD": "any text is a password; a wrong one is the broker's refusal, retried on air",
    "TTS_MODEL": "the vendor's model name, any text; the vendor refuses an unknown one per message",
    "STUDIO_HLS_URL": "what the studio page's player loads (a relative URL is fine behind a proxy)",
}


def build_cases(files: dict[str, Path]) -> list[Case]:
    c: list[Case] = []

    def add(setting: str, kind: str, **env: str) -> None:
        value = env.pop("value", None)  # the row's own setting, set last: it wins over a preset's
        c.append(Case(setting, kind, env if value is None else {**env, setting: value}))

    def numbers(setting: str, wrong_type: str, *out_of_range: str) -> None:
        add(setting, "wrong type", value=wrong_type)
        for value in out_of_range:
            add(setting, "out of range", value=value)

    elevenlabs = {"TTS_PROVIDER": "elevenlabs", "TTS_API_BASE_URL": f"http://127.0.0.1:{free_port()}"}
    tavus = {
        "TALKING_FACE_PROVIDER": "api",
        "TALKING_FACE_API": "tavus",
        "TALKING_FACE_API_URL": f"http://127.0.0.1:{free_port()}",
        "TALKING_FACE_AVATAR_ID": "r1234567",
        "TALKING_FACE_AUDIO_PUBLIC_URL": "https://poc.example.com/audio",
        "TALKING_FACE_AUDIO_PORT": "{free_port}",  # one per case: they run at once
    }
    add("RABBITMQ_HOST", "missing value", value="  ")
    numbers("RABBITMQ_PORT", "amqp", "0", "70000")
    add("RABBITMQ_USER", "missing value", value="")
    add("RABBITMQ_QUEUE", "missing value", value=" ")
    add("RABBITMQ_QUEUE", "reserved name", value="amq.speech")
    add("RABBITMQ_QUEUE", "out of range", value="q" * 248)
    add("RABBITMQ_VHOST", "missing value", value="")
    add("RABBITMQ_TLS", "wrong type", value="maybe")
    numbers("RABBITMQ_PREFETCH", "four", "0", "101")
    numbers("RABBITMQ_RECONNECT_SECONDS", "soon", "0", "61")
    add("RTMP_URL", "unknown scheme", value=f"http://127.0.0.1:1935/live/{STREAM_KEY}")
    add("RTMP_URL", "missing stream key", value=f"rtmp://127.0.0.1:1935/{STREAM_KEY}")
    add("RTMP_RESOLUTION", "wrong type", value="hd")
    add("RTMP_RESOLUTION", "out of range", value="1281x720")
    add("RTMP_RESOLUTION", "out of range", value="32x32")
    numbers("RTMP_FPS", "thirty", "0", "61")
    for name in ("RTMP_BITRATE", "RTMP_AUDIO_BITRATE"):
        numbers(name, "fast", "1k", "90M")
    numbers("RTMP_KEYFRAME_SECONDS", "often", "0", "11")
    for name in ("STATIC_VIDEO_PATH", "TALKING_FACE_AVATAR_IMAGE", "TALKING_FACE_AVATAR_VIDEO"):
        add(name, "missing file", value=str(files["missing"]))
        add(name, "unreadable file", value=str(files["not_an_image"] if "IMAGE" in name else files["not_a_video"]))
    add("STATIC_VIDEO_PATH", "no face", value=str(files["faceless"]))
    add("TALKING_FACE_AVATAR_IMAGE", "no face", value=str(files["faceless"]))
    add("STATIC_VIDEO_LOOP", "wrong type", value="sometimes")
    numbers("TRANSITION_SECONDS", "slow", "-1", "6")
    add("IDLE_BLINKS", "wrong type", value="often")
    numbers("IDLE_MOTION", "lively", "-0.5", "4")
    numbers("IDLE_SEED", "random", "-1", str(2**31))
    add("TTS_PROVIDER", "unknown name", value="festival")
    add("TTS_PROVIDER_LOCAL", "unknown name", TTS_PROVIDER="local", value="festival")
    add("TTS_API_PROVIDER", "unknown name", TTS_PROVIDER="api", value="acme")
    add("TTS_API_PROVIDER", "missing value", TTS_PROVIDER="api", TTS_API_PROVIDER="")
    add("TTS_FALLBACK_PROVIDER", "unknown name", value="espeak,festival")
    add("TTS_FALLBACK_PROVIDER", "names the provider", value="piper")
    add("TTS_FALLBACK_PROVIDER", "names one twice", value="espeak,espeak")
    add("TTS_API_KEY", "missing value", **elevenlabs, TTS_API_KEY="")
    add("TTS_VOICE", "unknown voice", value="klingon")
    add("TTS_VOICE", "unknown voice", TTS_PROVIDER="espeak", value="zz-nowhere")
    add("TTS_VOICE", "missing file", value=str(files["missing"].with_suffix(".onnx")))
    add("TTS_VOICE", "unusable file", value=str(files["bad_voice"]))  # fails loading, after going on air
    add("TTS_API_VOICE_ID", "unknown voice", **elevenlabs, value="rachel")
    add("TTS_LANGUAGE", "unknown name", value="tlh")
    add("TTS_TEXT_FILTER", "unknown name", value="html")
    add("TTS_API_BASE_URL", "unknown scheme", **elevenlabs, value=f"ftp://{TTS_KEY}@127.0.0.1/")
    add("TTS_API_BASE_URL", "wrong type", **elevenlabs, value="http://127.0.0.1:port/")
    add("AZURE_SPEECH_REGION", "missing value", TTS_PROVIDER="azure", value="")
    add("AZURE_SPEECH_REGION", "unknown name", TTS_PROVIDER="azure", value="west europe")
    google = {"TTS_PROVIDER": "google", "TTS_API_KEY": ""}
    add("GOOGLE_APPLICATION_CREDENTIALS", "missing value", **google, value="")
    add("GOOGLE_APPLICATION_CREDENTIALS", "missing file", **google, value=str(files["missing"]))
    add("GOOGLE_APPLICATION_CREDENTIALS", "unreadable file", **google, value=str(files["not_an_image"]))
    add("GOOGLE_APPLICATION_CREDENTIALS", "wrong type", **google, value=str(files["not_a_service_account"]))
    add("TTS_CHANNELS", "wrong type", value="stereo")
    add("TTS_CHANNELS", "out of range", value="3")
    numbers("TTS_TIMEOUT_SECONDS", "long", "0.1", "121")
    numbers("TTS_SAMPLE_RATE", "cd", "4000", "192000")
    numbers("TTS_RETRIES", "twice", "-1", "11")
    add("TALKING_FACE_PROVIDER", "unknown name", value="cloud")
    add("TALKING_FACE_API", "unknown name", TALKING_FACE_PROVIDER="api", value="heygen")
    add("TALKING_FACE_API", "missing value", TALKING_FACE_PROVIDER="api", TALKING_FACE_API="")
    add("TALKING_FACE_API_KEY", "missing value", TALKING_FACE_PROVIDER="api", TALKING_FACE_API="d-id", value="")
    add("TALKING_FACE_API_URL", "unknown scheme", **tavus, value=f"ftp://{FACE_KEY}@127.0.0.1/")
    add("TALKING_FACE_AVATAR_ID", "missing value", **tavus | {"TALKING_FACE_AVATAR_ID": ""})
    add("TALKING_FACE_AVATAR_ID", "missing value", TALKING_FACE_PROVIDER="api", TALKING_FACE_API="synthesia", value="")
    numbers("TALKING_FACE_API_TIMEOUT_SECONDS", "a while", "0", "1801")
    add("TALKING_FACE_AUDIO_PUBLIC_URL", "unknown scheme", **tavus | {"TALKING_FACE_AUDIO_PUBLIC_URL": "ftp://x/"})
    add("TALKING_FACE_AUDIO_PUBLIC_URL", "missing value", **tavus | {"TALKING_FACE_AUDIO_PUBLIC_URL": ""})
    add("TALKING_FACE_AUDIO_HOST", "missing value", **tavus | {"TALKING_FACE_AUDIO_HOST": ""})
    add("TALKING_FACE_AUDIO_HOST", "unknown name", **tavus | {"TALKING_FACE_AUDIO_HOST": "no-such-host.invalid"})
    add("TALKING_FACE_AUDIO_PORT", "wrong type", **tavus | {"TALKING_FACE_AUDIO_PORT": "http"})
    add("TALKING_FACE_AUDIO_PORT", "out of range", **tavus | {"TALKING_FACE_AUDIO_PORT": "0"})
    add("TALKING_FACE_MODEL", "unknown name", value="dalle")
    add("TALKING_FACE_MODEL", "not built", value="mimictalk")
    add("TALKING_FACE_MODEL_PATH", "missing folder", TALKING_FACE_MODEL="musetalk", value=str(files["missing"]))
    add("TALKING_FACE_MODEL_PATH", "no weights", TALKING_FACE_MODEL="musetalk", value=str(files["empty_dir"]))
    add("TALKING_FACE_DEVICE", "unknown name", value="tpu")
    add("TALKING_FACE_DTYPE", "unknown name", value="int8")
    numbers("TALKING_FACE_BATCH_SIZE", "many", "0", "257")
    add("FFMPEG_PATH", "missing file", value=str(files["missing"]))
    add("FFMPEG_PATH", "not ffmpeg", value="/bin/true")
    numbers("MAX_TEXT_CHARS", "lots", "0", "100001")
    numbers("MAX_AUDIO_SECONDS", "a minute", "0", "3601")
    numbers("MAX_BODY_BYTES", "5MB", "100", "100000001")
    numbers("SPEECH_AHEAD_SECONDS", "half a minute", "0", "601")
    numbers("SHUTDOWN_DEADLINE_SECONDS", "soon", "-1", "31")
    add("HTTP_HOST", "missing value", value=" ")
    add("HTTP_HOST", "unknown name", STUDIO_TOKEN=STUDIO_TOKEN, value="no-such-host.invalid")
    numbers("HTTP_PORT", "web", "-1", "70000")
    add("HTTP_PORT", "in use", value="{busy_port}")
    add("LOG_LEVEL", "unknown name", value="verbose")
    if "STUDIO_TOKEN" in env_names():
        add("STUDIO_TOKEN", "out of range", value="short")
        add("STUDIO_TOKEN", "missing value", HTTP_HOST="0.0.0.0", value="")
    add("STATIONS_FILE", "missing file", value=str(files["missing"].with_suffix(".toml")))
    add("STATIONS_FILE", "not TOML", value=str(files["stations_not_toml"]))
    add("STATIONS_FILE", "missing value", value=str(files["stations_none"]))
    add("STATIONS_FILE", "unknown name", value=str(files["stations_unknown_key"]))
    add("STATIONS_FILE", "process-wide key", value=str(files["stations_http_port"]))
    add("STATIONS_FILE", "out of range", value=str(files["stations_bad_fps"]))
    add("STATIONS_FILE", "missing file", value=str(files["stations_missing_avatar"]))
    add("STATIONS_FILE", "names one twice", value=str(files["stations_same_queue"]))
    add("STATIONS_FILE", "names one twice", value=str(files["stations_same_name"]))
    add("STATIONS_FILE", "names one twice", value=str(files["stations_same_url"]))
    return c


def base_env() -> dict[str, str]:
    """The machine's environment without any poc setting, plus an unreachable broker and RTMP
    server, a free HTTP port and the secrets."""
    env = {k: v for k, v in os.environ.items() if k not in set(env_names()) | {"POC_ENV_FILE"}}
    env.update(
        POC_ENV_FILE="/nonexistent/poc.env",
        PYTHONPATH=str(ROOT / "src"),
        RABBITMQ_PORT=str(free_port()),
        RABBITMQ_PASSWORD=PASSWORD,
        RTMP_URL=f"rtmp://127.0.0.1:{free_port()}/live/{STREAM_KEY}",
        HTTP_PORT=str(free_port()),
        TTS_API_KEY=TTS_KEY,
        TALKING_FACE_API_KEY=FACE_KEY,
        AZURE_SPEECH_REGION="westeurope",
    )
    return env


def make_files(folder: Path) -> dict[str, Path]:
    import cv2
    import numpy as np

    files = {
        "missing": folder / "nowhere" / "missing.png",
        "not_an_image": folder / "notes.png",
        "not_a_video": folder / "notes.mp4",
        "faceless": folder / "grey.png",
        "bad_voice": folder / "voice.onnx",
        "not_a_service_account": folder / "account.json",
        "empty_dir": folder / "models",
    }
    files["not_an_image"].write_text("not an image\n")
    files["not_a_video"].write_text("not a video\n")
    cv2.imwrite(str(files["faceless"]), np.full((256, 256, 3), 128, np.uint8))
    files["bad_voice"].write_bytes(b"not an onnx model")
    files["bad_voice"].with_name("voice.onnx.json").write_text(
        '{"audio": {"sample_rate": 22050}, "espeak": {"voice": "en-us"}}'
    )
    files["not_a_service_account"].write_text('{"type": "authorized_user"}')
    files["empty_dir"].mkdir()
    files.update(make_stations_files(folder))
    return files


def make_stations_files(folder: Path) -> dict[str, Path]:
    """Stations files each wrong in one way (every station's stream key is a secret). None of
    them goes on air: the file is checked whole first."""
    server = f"rtmp://127.0.0.1:{free_port()}/live"

    def station(name: str, queue: str, key: str = "", extra: str = "") -> str:
        url = f"{server}/{key or STREAM_KEY + name}"
        return f'[[station]]\nname = "{name}"\nqueue = "{queue}"\nrtmp_url = "{url}"\n{extra}\n'

    bodies = {
        "stations_not_toml": station("a", "qa") + "[[station]]\nname = b\n",
        "stations_none": "# no stations yet\n",
        "stations_unknown_key": station("a", "qa") + station("b", "qb", extra='colour = "red"'),
        "stations_http_port": station("a", "qa", extra="http_port = 8081"),
        "stations_bad_fps": station("a", "qa", extra="fps = 0"),
        "stations_missing_avatar": station("a", "qa", extra='avatar = "nowhere/face.png"'),
        "stations_same_queue": station("a", "q") + station("b", "q"),
        "stations_same_name": station("a", "qa") + station("a", "qb"),
        "stations_same_url": station("a", "qa", key=STREAM_KEY) + station("b", "qb", key=STREAM_KEY),
    }
    files = {}
    for name, body in bodies.items():
        files[name] = folder / f"{name}.toml"
        files[name].write_text(body)
    return files


def run_case(case: Case, cwd: Path) -> str | None:
    """None when the case behaves; else what went wrong, with the output."""
    env = base_env()
    with socket.socket() as busy:  # for "in use": a port someone else listens on
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        for name, value in case.env.items():
            env[name] = value.replace("{busy_port}", port).replace("{free_port}", str(free_port()))
        try:
            result = subprocess.run(
                [sys.executable, "-m", "poc", "run"],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=CASE_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as expired:
            out = (expired.stderr or b"")[-600:]
            return f"did not stop within {CASE_TIMEOUT_S} s: {out!r}"
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if line.startswith("poc: ")]
    problems = []
    if result.returncode != 2:
        problems.append(f"exit code {result.returncode}")
    if len(lines) != 1:
        problems.append(f"{len(lines)} error lines")
    elif case.setting not in lines[0]:
        problems.append("the line does not name the setting")
    if "Traceback" in output or re.search(r" (ERROR|CRITICAL) ", output):
        problems.append("a traceback or an error logged besides the line")
    if any(secret in output for secret in SECRETS):
        problems.append("a secret in the output")
    return f"{'; '.join(problems)}:\n{output[-1500:]}" if problems else None


@pytest.mark.slow
@pytest.mark.timeout(900)  # ~130 start-ups, a dozen of them past going on air (about 2 min here)
def test_every_bad_setting_stops_start_up_with_one_line_naming_it(tmp_path):
    files = make_files(tmp_path)
    cases = build_cases(files)
    documented = readme_settings()
    covered = {case.setting for case in cases}
    assert documented, "no settings found in README.md's configuration table"
    missing = [name for name in documented if name not in covered and name not in NO_BAD_VALUE]
    assert not missing, f"README settings without a bad-value case here: {missing}"
    unknown = sorted((covered | set(NO_BAD_VALUE)) - set(env_names()))
    assert not unknown, f"cases for names that are not settings: {unknown}"

    with ThreadPoolExecutor(WORKERS) as pool:
        outcomes = list(pool.map(lambda case: run_case(case, tmp_path), cases))
    failures = [f"{c.setting} ({c.kind}, {c.env}): {outcome}" for c, outcome in zip(cases, outcomes) if outcome]
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n\n" + "\n\n".join(failures)


def test_the_readme_table_is_read():
    # The walk above is only as good as this parse: spot-check both ends and a shared row.
    names = readme_settings()
    assert names[:2] == ["RABBITMQ_HOST", "RABBITMQ_PORT"] and "LOG_LEVEL" in names
    assert {"TALKING_FACE_AVATAR_IMAGE", "TALKING_FACE_AVATAR_VIDEO", "MAX_BODY_BYTES"} <= set(names)
    assert len(names) == len(set(names)) >= 50


def test_every_start_up_error_class_is_a_startup_error():
    from poc.config import ConfigError
    from poc.errors import StartupError
    from poc.face.avatar import AvatarError
    from poc.face.base import AvatarFaceError, EngineError

    for kind in (ConfigError, AvatarError, EngineError, AvatarFaceError):
        assert issubclass(kind, StartupError)
    # what callers caught before stays catchable
    assert issubclass(ConfigError, ValueError) and issubclass(AvatarError, ValueError)
    assert issubclass(EngineError, RuntimeError)


def test_the_line_names_the_setting_once_and_is_one_line():
    from poc.errors import StartupError

    assert StartupError("no face found", setting="STATIC_VIDEO_PATH").line() == "STATIC_VIDEO_PATH: no face found"
    named = StartupError("TTS_VOICE/TTS_LANGUAGE: unknown voice", setting="TTS_PROVIDER")
    assert named.line() == "TTS_VOICE/TTS_LANGUAGE: unknown voice"
    assert StartupError("cannot load:\n  line two\n", setting="X_Y").line() == "X_Y: cannot load: line two"
    error = StartupError("weights missing")
    assert error.with_setting("TALKING_FACE_MODEL_PATH").with_setting("TALKING_FACE_MODEL") is error
    assert error.line() == "TALKING_FACE_MODEL_PATH: weights missing"


def test_a_startup_error_is_found_inside_nested_task_group_errors():
    from poc.errors import StartupError, find_startup_error

    inner = StartupError("bad", setting="HTTP_PORT")
    wrapped = BaseExceptionGroup("outer", [ExceptionGroup("inner", [ValueError("other"), inner])])
    assert find_startup_error(wrapped) is inner
    assert find_startup_error(ExceptionGroup("g", [ValueError("x")])) is None
    assert find_startup_error(RuntimeError("x")) is None
