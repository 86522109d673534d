"""Each bad setting stops start-up with one line that names it; secrets never echo."""

from pathlib import Path

import pytest

from poc.config import ConfigError, load_settings, redact_url


def settings_with(**env: str):
    return load_settings(environ=env, env_file=Path("/nonexistent/.env"))


def test_defaults_match_the_plan():
    s = settings_with()
    assert s.rabbitmq_queue == "talking_face_input"
    assert s.resolution == (1280, 720) and s.fps == 30 and s.bitrate == "2000k"
    assert s.sample_rate == 44100
    assert s.avatar_path.is_file()  # the shipped default avatar


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("RTMP_FPS", "0", "RTMP_FPS: must be a whole number between 1 and 60"),
        ("RTMP_FPS", "thirty", "RTMP_FPS: must be a whole number"),
        ("RTMP_RESOLUTION", "1281x720", "RTMP_RESOLUTION: width and height must be even"),
        ("RTMP_RESOLUTION", "big", "RTMP_RESOLUTION: must look like 1280x720"),
        ("RTMP_BITRATE", "lots", "RTMP_BITRATE: must look like 2000k"),
        ("RTMP_URL", "http://example.com/x", "RTMP_URL: must be an rtmp:// or rtmps:// URL"),
        ("RTMP_URL", "rtmp://host", "RTMP_URL: must name an application and a stream key"),
        ("RABBITMQ_PORT", "70000", "RABBITMQ_PORT: must be a whole number between 1 and 65535"),
        ("TTS_SAMPLE_RATE", "100", "TTS_SAMPLE_RATE:"),
        ("TTS_PROVIDER", "siri", "TTS_PROVIDER: must be one of local, api, piper, espeak, edge, pyttsx3, elevenlabs"),
        ("TALKING_FACE_MODEL", "sadtalker", "TALKING_FACE_MODEL: must be one of warp, musetalk"),
        ("TALKING_FACE_DTYPE", "int8", "TALKING_FACE_DTYPE: must be one of auto, float16, bfloat16, float32"),
        ("TALKING_FACE_AVATAR_IMAGE", "/no/such/face.png", "TALKING_FACE_AVATAR_IMAGE: file not found"),
        ("STATIC_VIDEO_PATH", "/no/such/loop.mp4", "STATIC_VIDEO_PATH: file not found"),
        ("FFMPEG_PATH", "/no/ffmpeg", "FFMPEG_PATH: no executable ffmpeg"),
        ("STATIC_VIDEO_LOOP", "maybe", "STATIC_VIDEO_LOOP: must be true or false"),
    ],
)
def test_bad_setting_names_itself(name, value, expected):
    with pytest.raises(ConfigError) as error:
        settings_with(**{name: value})
    message = str(error.value)
    assert message.startswith(expected)
    assert "\n" not in message


def test_dtype_defaults_to_auto_and_takes_the_half_precisions():
    assert settings_with().dtype == "auto"
    assert settings_with(TALKING_FACE_DTYPE="BFloat16").dtype == "bfloat16"  # choices ignore case
    assert settings_with(TALKING_FACE_DTYPE="float16").dtype == "float16"


def test_musetalk_without_a_model_folder_is_a_startup_error(tmp_path):
    with pytest.raises(ConfigError, match="TALKING_FACE_MODEL_PATH: folder not found"):
        settings_with(TALKING_FACE_MODEL="musetalk", TALKING_FACE_MODEL_PATH=str(tmp_path / "none"))


def test_env_file_is_read_and_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("# comment\nRTMP_FPS=25\nexport RABBITMQ_QUEUE='from_file'\n")
    s = load_settings(environ={"RTMP_FPS": "24"}, env_file=env_file)
    assert s.fps == 24 and s.rabbitmq_queue == "from_file"


def test_env_file_is_parsed_as_dotenv_does(tmp_path):
    """Inline comments after a space go; a '#' inside quotes or a word stays; quotes and
    `export` are stripped; a line that is not KEY=VALUE stops start-up naming its line."""
    env_file = tmp_path / ".env"
    env_file.write_text(
        "RTMP_FPS=25  # frames per second\n"
        "export RABBITMQ_QUEUE=\"q # not a comment\"\n"
        "RABBITMQ_PASSWORD='pa ss#word'\n"
        "TTS_VOICE=voice#7\n"
        "SOMETHING_ELSE=ignored\n"
    )
    s = load_settings(environ={}, env_file=env_file)
    assert s.fps == 25 and s.rabbitmq_queue == "q # not a comment" and s.tts_voice == "voice#7"
    assert s.rabbitmq_password.get_secret_value() == "pa ss#word"
    env_file.write_text("RTMP_FPS=25\nthis line is not a setting\n")
    with pytest.raises(ConfigError, match=r":2: cannot parse this line"):
        load_settings(environ={}, env_file=env_file)


def test_poc_env_file_names_another_file(tmp_path):
    other = tmp_path / "staging.env"
    other.write_text("RTMP_FPS=12\n")
    assert load_settings(environ={"POC_ENV_FILE": str(other)}).fps == 12


def test_cli_overrides_beat_the_environment():
    s = load_settings(environ={"RTMP_FPS": "24"}, env_file=Path("/none"), overrides={"RTMP_FPS": "25"})
    assert s.fps == 25


def test_secrets_are_not_echoed_in_errors_and_are_listed_for_redaction():
    with pytest.raises(ConfigError) as error:
        settings_with(RTMP_URL="ftp://host/app/sup3rs3cretkey")
    assert "sup3rs3cretkey" not in str(error.value)
    s = settings_with(RTMP_URL="rtmp://a.example/live/sup3rs3cretkey", RABBITMQ_PASSWORD="hunter2hunter2")
    assert {"sup3rs3cretkey", "hunter2hunter2"} <= set(s.secrets())
    assert "sup3rs3cretkey" not in repr(s) and "hunter2hunter2" not in repr(s)
    assert "hunter2hunter2" not in str(s.model_dump())  # SecretStr even when dumped


def test_shipped_defaults_are_not_masked_as_secrets():
    """guest and the demo stream key guard nothing; masking them would garble log lines."""
    assert settings_with().secrets() == []


def test_redacted_url_hides_key_and_credentials():
    shown = redact_url("rtmp://user:pw@live.example.com:1935/app/abcdef123")
    assert shown == "rtmp://***@live.example.com:1935/app/***"


def test_every_setting_is_documented_in_the_readme_and_env_example():
    from poc.config import env_names
    from poc.paths import PROJECT_ROOT

    readme = (PROJECT_ROOT / "README.md").read_text()
    example = (PROJECT_ROOT / ".env.example").read_text()
    for name in env_names():
        assert f"`{name}`" in readme, f"{name} missing from the README's configuration table"
        assert f"\n{name}=" in example, f"{name} missing from .env.example"
    load_settings(environ={}, env_file=PROJECT_ROOT / ".env.example")  # the example is valid
