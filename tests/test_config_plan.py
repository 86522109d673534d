"""The plan's own settings file starts poc as written, and its three avatar files are accepted.

tests/data/plan.env.dev is the `.env.dev` block of the plan, verbatim (inline comments, relative
paths and all); the test runs where those relative paths exist.
"""

from pathlib import Path

import pytest

from poc.config import ConfigError, load_settings

PLAN_FILE = Path(__file__).parent / "data" / "plan.env.dev"


@pytest.fixture
def plan_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder holding the files the plan's file names (./assets/..., ./models/musetalk)."""
    (tmp_path / "assets").mkdir()
    for name in ("default_avatar.png", "avatar.png", "avatar_video.mp4"):
        (tmp_path / "assets" / name).write_bytes(b"stand-in: config checks existence, the avatar loader the content")
    (tmp_path / "models" / "musetalk").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_fixture_is_the_plans_block_verbatim():
    """Guards the fixture itself: it must stay the plan's text, not a tidied copy."""
    # shared/ lies beside the checkout (CI clones elsewhere and copies shared/ beside the clone)
    plan = Path(__file__).resolve().parents[2] / "shared" / "research" / "plan-config.md"
    if not plan.is_file():
        pytest.skip("the plan's quote is not on this machine")
    block = plan.read_text().split("```sh\n", 1)[1].split("```", 1)[0]
    assert PLAN_FILE.read_text() == block


def test_plan_file_starts_poc_as_written(plan_folder: Path):
    s = load_settings(environ={}, env_file=PLAN_FILE)  # check_files: avatars, model folder, ffmpeg

    assert s.tts_provider == "edge"  # TTS_PROVIDER=local + TTS_PROVIDER_LOCAL=edge-tts
    assert s.tts_voice == "en-US-AriaNeural" and s.tts_language == "en"  # inline comments gone
    assert (s.sample_rate, s.tts_channels) == (44100, 1)
    assert (s.talking_face_model, s.device, s.batch_size) == ("musetalk", "cuda", 1)
    assert s.model_path == Path("models/musetalk")
    assert s.talking_face_provider == "local"
    assert s.talking_face_api_url == "https://api.example.com"
    assert s.talking_face_api_key is not None and s.talking_face_api_key.get_secret_value() == "your-api-key"
    assert s.talking_face_avatar_id == "avatar-123"
    assert s.static_video_loop is True and s.ffmpeg_path == "ffmpeg"
    assert (s.rabbitmq_host, s.rtmp_url) == ("localhost", "rtmp://your-server.com/live/stream_key")
    # the commented-out API lines stay commented out
    assert s.tts_api_provider is None and s.tts_api_key is None and s.tts_api_voice_id is None


def test_plan_files_three_avatars_are_idle_and_talking(plan_folder: Path):
    s = load_settings(environ={}, env_file=PLAN_FILE)
    assert s.idle_avatar_path == Path("assets/default_avatar.png")
    assert s.talking_avatar_path == Path("assets/avatar_video.mp4")  # the video wins over the image
    assert s.avatar_path == s.talking_avatar_path
    assert s.avatars_differ


def test_plan_file_with_the_api_lines_uncommented_needs_nothing_else(plan_folder: Path, tmp_path: Path):
    text = PLAN_FILE.read_text().replace("TTS_PROVIDER=local", "TTS_PROVIDER=api").replace("# TTS_API", "TTS_API")
    edited = tmp_path / "api.env"
    edited.write_text(text)
    s = load_settings(environ={}, env_file=edited)
    assert s.tts_provider == "elevenlabs"
    assert s.tts_voice == "voice-id"  # TTS_API_VOICE_ID wins over TTS_VOICE for an API voice
    assert s.tts_api_key is not None and "your-api-key" in s.secrets()


def test_a_missing_plan_avatar_names_its_setting(plan_folder: Path):
    (plan_folder / "assets" / "avatar_video.mp4").unlink()
    with pytest.raises(ConfigError) as error:
        load_settings(environ={}, env_file=PLAN_FILE)
    assert str(error.value) == "TALKING_FACE_AVATAR_VIDEO: file not found: assets/avatar_video.mp4"


@pytest.mark.parametrize(
    ("env", "idle", "talking"),
    [
        ({}, "default", "default"),
        ({"STATIC_VIDEO_PATH": "a.png"}, "a.png", "a.png"),
        ({"TALKING_FACE_AVATAR_IMAGE": "b.png"}, "b.png", "b.png"),
        ({"TALKING_FACE_AVATAR_VIDEO": "c.mp4", "TALKING_FACE_AVATAR_IMAGE": "b.png"}, "c.mp4", "c.mp4"),
        ({"STATIC_VIDEO_PATH": "a.png", "TALKING_FACE_AVATAR_IMAGE": "b.png"}, "a.png", "b.png"),
        ({"STATIC_VIDEO_PATH": "a.png", "TALKING_FACE_AVATAR_IMAGE": "a.png"}, "a.png", "a.png"),
    ],
)
def test_idle_and_talking_avatar_resolution(tmp_path: Path, env: dict[str, str], idle: str, talking: str):
    from poc.paths import DEFAULT_AVATAR

    for name in ("a.png", "b.png", "c.mp4"):
        (tmp_path / name).write_bytes(b"x")
    full = {k: str(tmp_path / v) for k, v in env.items()}
    s = load_settings(environ=full, env_file=Path("/nonexistent"))
    expect = {"default": DEFAULT_AVATAR, **{n: tmp_path / n for n in ("a.png", "b.png", "c.mp4")}}
    assert (s.idle_avatar_path, s.talking_avatar_path) == (expect[idle], expect[talking])
    assert s.avatars_differ == (idle != talking)


def test_the_same_file_by_two_spellings_does_not_differ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "face.png").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    s = load_settings(
        environ={"STATIC_VIDEO_PATH": "face.png", "TALKING_FACE_AVATAR_IMAGE": str(tmp_path / "face.png")},
        env_file=Path("/nonexistent"),
    )
    assert not s.avatars_differ


def test_cli_avatar_flag_sets_the_one_avatar_for_idle_and_talking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """--avatar means "this avatar": it must not leave a .env's other avatar file in play."""
    from poc.cli import build_parser, settings_from_args

    flag, env_video = tmp_path / "flag.png", tmp_path / "env.mp4"
    flag.write_bytes(b"x")
    env_video.write_bytes(b"x")
    monkeypatch.setenv("POC_ENV_FILE", "/nonexistent")
    monkeypatch.setenv("TALKING_FACE_AVATAR_VIDEO", str(env_video))
    monkeypatch.setenv("STATIC_VIDEO_PATH", str(env_video))
    s = settings_from_args(build_parser().parse_args(["run", "--avatar", str(flag)]))
    assert s.idle_avatar_path == flag and s.talking_avatar_path == flag and not s.avatars_differ
