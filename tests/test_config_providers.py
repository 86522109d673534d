"""Choosing voices and faces: both of the plan's forms resolve to one concrete provider, every
API provider in use has its credentials before start-up, and each refusal is one line that names
the setting and never shows a key."""

import json
from pathlib import Path

import pytest

from poc.cli import main
from poc.config import ConfigError, load_settings

KEY = "sk-live-0123456789abcdef"  # must never appear in an error


def settings_with(check_files: bool = False, **env: str):
    return load_settings(environ=env, env_file=Path("/nonexistent/.env"), check_files=check_files)


@pytest.mark.parametrize(
    ("env", "provider"),
    [
        ({}, "piper"),
        ({"TTS_PROVIDER": "local"}, "piper"),
        ({"TTS_PROVIDER": "local", "TTS_PROVIDER_LOCAL": "edge-tts"}, "edge"),
        ({"TTS_PROVIDER": "local", "TTS_PROVIDER_LOCAL": "pyttsx3"}, "pyttsx3"),
        ({"TTS_PROVIDER": "LOCAL", "TTS_PROVIDER_LOCAL": "Espeak"}, "espeak"),
        ({"TTS_PROVIDER": "api", "TTS_API_PROVIDER": "elevenlabs", "TTS_API_KEY": KEY}, "elevenlabs"),
        ({"TTS_PROVIDER": "api", "TTS_API_PROVIDER": "openai", "TTS_API_KEY": KEY}, "openai"),
        ({"TTS_PROVIDER": "edge-tts"}, "edge"),
        ({"TTS_PROVIDER": "edge"}, "edge"),
        ({"TTS_PROVIDER": "pyttsx3"}, "pyttsx3"),
        ({"TTS_PROVIDER": "espeak"}, "espeak"),
        ({"TTS_PROVIDER": "cartesia", "TTS_API_KEY": KEY}, "cartesia"),
        ({"TTS_PROVIDER": "azure", "TTS_API_KEY": KEY, "AZURE_SPEECH_REGION": "westeurope"}, "azure"),
        ({"TTS_PROVIDER": "azure", "TTS_API_KEY": KEY, "TTS_API_BASE_URL": "ws://127.0.0.1:9/tts"}, "azure"),
        ({"TTS_PROVIDER": "google", "TTS_API_KEY": KEY}, "google"),
        # a direct name wins; the plan's sub-settings are read only with local / api
        ({"TTS_PROVIDER": "piper", "TTS_PROVIDER_LOCAL": "pyttsx3", "TTS_API_PROVIDER": "openai"}, "piper"),
    ],
)
def test_plan_form_and_direct_form_resolve_to_one_provider(env, provider):
    assert settings_with(**env).tts_provider == provider


def test_api_form_with_key_and_voice_id():
    s = settings_with(TTS_PROVIDER="api", TTS_API_PROVIDER="elevenlabs", TTS_API_KEY=KEY,
                      TTS_API_VOICE_ID="21m00Tcm4TlvDq8ikWAM", TTS_VOICE="en-US-AriaNeural",
                      TTS_MODEL="eleven_flash_v2_5", TTS_API_BASE_URL="http://127.0.0.1:8765")  # fmt: skip
    assert s.tts_voice == "21m00Tcm4TlvDq8ikWAM"
    assert s.tts_api_key is not None and s.tts_api_key.get_secret_value() == KEY
    assert (s.tts_model, s.tts_api_base_url) == ("eleven_flash_v2_5", "http://127.0.0.1:8765")
    assert KEY in s.secrets() and KEY not in repr(s)


def test_voice_id_is_for_api_voices_only():
    s = settings_with(TTS_PROVIDER="edge", TTS_VOICE="en-GB-SoniaNeural", TTS_API_VOICE_ID="voice-id")
    assert s.tts_voice == "en-GB-SoniaNeural"
    s = settings_with(TTS_PROVIDER="openai", TTS_API_KEY=KEY, TTS_VOICE="alloy")
    assert s.tts_voice == "alloy"  # no voice id: TTS_VOICE is the vendor's voice


def test_fallback_chain_keeps_its_order():
    s = settings_with(TTS_PROVIDER="elevenlabs", TTS_API_KEY=KEY, AZURE_SPEECH_REGION="eastus",
                      TTS_FALLBACK_PROVIDER=" azure, edge-tts ,piper")  # fmt: skip
    assert s.tts_fallback_providers == ("azure", "edge", "piper")
    assert settings_with().tts_fallback_providers == ()
    assert settings_with(TTS_FALLBACK_PROVIDER="").tts_fallback_providers == ()


def test_timeouts_channels_and_transition_defaults_and_ranges():
    s = settings_with()
    assert (s.tts_channels, s.tts_timeout_seconds, s.transition_seconds) == (1, 10.0, 0.3)
    assert s.talking_face_api_timeout_seconds == 120.0
    s = settings_with(TTS_CHANNELS="2", TTS_TIMEOUT_SECONDS="0.5", TRANSITION_SECONDS="0",
                      TALKING_FACE_API_TIMEOUT_SECONDS="1800")  # fmt: skip
    assert (s.tts_channels, s.tts_timeout_seconds, s.transition_seconds) == (2, 0.5, 0.0)
    assert s.talking_face_api_timeout_seconds == 1800.0


def test_face_api_settings():
    s = settings_with(TALKING_FACE_PROVIDER="api", TALKING_FACE_API="D-ID", TALKING_FACE_API_KEY=KEY,
                      TALKING_FACE_API_URL="https://api.d-id.example", TALKING_FACE_AVATAR_ID="amy")  # fmt: skip
    assert (s.talking_face_provider, s.talking_face_api, s.talking_face_avatar_id) == ("api", "d-id", "amy")
    assert s.talking_face_api_url == "https://api.d-id.example"
    assert KEY in s.secrets() and KEY not in repr(s)
    # local: the API settings are read, not required
    s = settings_with(TALKING_FACE_PROVIDER="local", TALKING_FACE_API_URL="https://api.example.com")
    assert s.talking_face_api is None and s.talking_face_api_url == "https://api.example.com"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TTS_PROVIDER": "api"}, "TTS_API_PROVIDER: required when TTS_PROVIDER=api"),
        ({"TTS_PROVIDER": "local", "TTS_PROVIDER_LOCAL": "elevenlabs"}, "TTS_PROVIDER_LOCAL: must be one of"),
        ({"TTS_PROVIDER": "api", "TTS_API_PROVIDER": "piper"}, "TTS_API_PROVIDER: must be one of elevenlabs"),
        ({"TTS_PROVIDER": "api", "TTS_API_PROVIDER": "elevenlabs"},
         "TTS_API_KEY: required for the elevenlabs voice (TTS_API_PROVIDER)"),
        ({"TTS_PROVIDER": "openai"}, "TTS_API_KEY: required for the openai voice (TTS_PROVIDER)"),
        ({"TTS_PROVIDER": "google"}, "TTS_API_KEY or GOOGLE_APPLICATION_CREDENTIALS: required for the google voice"),
        ({"TTS_PROVIDER": "azure", "AZURE_SPEECH_REGION": "eastus"}, "TTS_API_KEY: required for the azure voice"),
        ({"TTS_PROVIDER": "azure", "TTS_API_KEY": KEY},
         "AZURE_SPEECH_REGION or TTS_API_BASE_URL: required for the azure voice"),
        ({"TTS_PROVIDER": "edge", "TTS_FALLBACK_PROVIDER": "cartesia,piper"},
         "TTS_API_KEY: required for the cartesia voice (TTS_FALLBACK_PROVIDER)"),
        ({"TTS_PROVIDER": "piper", "TTS_FALLBACK_PROVIDER": "espeak,piper"},
         "TTS_FALLBACK_PROVIDER: names the primary provider piper"),
        ({"TTS_PROVIDER": "local", "TTS_PROVIDER_LOCAL": "edge-tts", "TTS_FALLBACK_PROVIDER": "edge"},
         "TTS_FALLBACK_PROVIDER: names the primary provider edge"),
        ({"TTS_FALLBACK_PROVIDER": "espeak,siri"}, "TTS_FALLBACK_PROVIDER: must be one of"),
        ({"TTS_FALLBACK_PROVIDER": "espeak,espeak"}, "TTS_FALLBACK_PROVIDER: names a provider twice"),
        ({"TTS_PROVIDER": "openai", "TTS_API_KEY": KEY, "TTS_API_BASE_URL": "ftp://host/v1"},
         "TTS_API_BASE_URL: must be a http:// or https:// or ws:// or wss:// URL with a host"),
        ({"TTS_PROVIDER": "openai", "TTS_API_KEY": KEY, "TTS_API_BASE_URL": "localhost:8080"},
         "TTS_API_BASE_URL: must be a"),
        ({"TTS_PROVIDER": "openai", "TTS_API_KEY": KEY, "TTS_API_BASE_URL": f"https://u:{KEY}@host:port/"},
         "TTS_API_BASE_URL: must be a"),
        ({"TTS_CHANNELS": "6"}, "TTS_CHANNELS: must be 1 (mono) or 2 (stereo) (got '6')"),
        ({"TTS_TIMEOUT_SECONDS": "0.1"}, "TTS_TIMEOUT_SECONDS: must be a number between 0.5 and 120"),
        ({"TRANSITION_SECONDS": "9"}, "TRANSITION_SECONDS: must be a number between 0 and 5"),
        ({"TALKING_FACE_PROVIDER": "cloud"}, "TALKING_FACE_PROVIDER: must be one of local, api"),
        ({"TALKING_FACE_PROVIDER": "api", "TALKING_FACE_API_KEY": KEY},
         "TALKING_FACE_API: required when TALKING_FACE_PROVIDER=api (one of d-id, tavus, hedra, synthesia)"),
        ({"TALKING_FACE_PROVIDER": "api", "TALKING_FACE_API": "tavus"},
         "TALKING_FACE_API_KEY: required for the tavus face API"),
        ({"TALKING_FACE_API": "heygen"}, "TALKING_FACE_API: must be one of d-id, tavus, hedra, synthesia"),
        ({"TALKING_FACE_API_URL": f"api.example.com/{KEY}"}, "TALKING_FACE_API_URL: must be a http:// or https://"),
        ({"TALKING_FACE_API_TIMEOUT_SECONDS": "0"}, "TALKING_FACE_API_TIMEOUT_SECONDS: must be a number between 1"),
        ({"TALKING_FACE_MODEL": "mimictalk"}, "TALKING_FACE_MODEL: mimictalk is not built in poc"),
        ({"TALKING_FACE_MODEL": "SyncTalk"}, "TALKING_FACE_MODEL: synctalk is not built in poc"),
    ],
)
def test_each_refusal_is_one_line_naming_the_setting_without_the_key(env, expected):
    with pytest.raises(ConfigError) as error:
        settings_with(**env)
    message = str(error.value)
    assert message.startswith(expected), message
    assert "\n" not in message and KEY not in message


def test_backup_models_point_to_their_plan():
    with pytest.raises(ConfigError, match=r"docs/backup-models\.md"):
        settings_with(TALKING_FACE_MODEL="mimictalk")
    from poc.paths import PROJECT_ROOT

    assert (PROJECT_ROOT / "docs" / "backup-models.md").is_file()


def test_several_bad_settings_are_reported_on_one_line():
    with pytest.raises(ConfigError) as error:
        settings_with(RTMP_FPS="0", TTS_CHANNELS="3", TTS_API_KEY="")
    message = str(error.value)
    assert "RTMP_FPS:" in message and "TTS_CHANNELS:" in message and "\n" not in message


class TestGoogleCredentials:
    def credentials(self, tmp_path: Path, body: object | str) -> Path:
        path = tmp_path / "sa.json"
        path.write_text(body if isinstance(body, str) else json.dumps(body))
        return path

    def load(self, path: Path, **env: str):
        return settings_with(check_files=True, TTS_PROVIDER="google", GOOGLE_APPLICATION_CREDENTIALS=str(path), **env)

    def test_a_service_account_file_replaces_the_key(self, tmp_path):
        path = self.credentials(tmp_path, {"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----x"})
        assert self.load(path).google_application_credentials == path

    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            ('{"type": "service_account", "private_key": "-----BEGIN', "is not a readable JSON file"),
            ({"type": "authorized_user", "private_key": "-----BEGIN PRIVATE KEY-----x"},
             "is not a service-account key (its type is 'authorized_user')"),
            (["-----BEGIN PRIVATE KEY-----x"], "is not a service-account key (its type is None)"),
        ],
    )
    def test_a_bad_file_is_named_and_its_content_never_shown(self, tmp_path, body, expected):
        path = self.credentials(tmp_path, body)
        with pytest.raises(ConfigError) as error:
            self.load(path)
        message = str(error.value)
        assert message.startswith("GOOGLE_APPLICATION_CREDENTIALS: ") and expected in message
        assert "BEGIN" not in message and "\n" not in message

    def test_a_missing_file_is_named(self, tmp_path):
        with pytest.raises(ConfigError, match=r"^GOOGLE_APPLICATION_CREDENTIALS: file not found"):
            self.load(tmp_path / "absent.json", TTS_API_KEY=KEY)

    def test_not_checked_when_google_is_not_used(self, tmp_path):
        path = self.credentials(tmp_path, "not json")
        s = settings_with(check_files=True, GOOGLE_APPLICATION_CREDENTIALS=str(path))
        assert s.tts_provider == "piper"


def test_cli_exits_2_with_one_line_for_a_missing_key(monkeypatch, capsys):
    monkeypatch.setenv("POC_ENV_FILE", "/nonexistent")
    monkeypatch.setenv("TTS_PROVIDER", "api")
    monkeypatch.setenv("TTS_API_PROVIDER", "cartesia")
    monkeypatch.setenv("TALKING_FACE_API_KEY", KEY)
    assert main(["run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TTS_API_KEY: required for the cartesia voice" in err[0]
    assert KEY not in err[0]


def test_cli_exits_2_for_a_backup_face_model(monkeypatch, capsys):
    monkeypatch.setenv("POC_ENV_FILE", "/nonexistent")
    monkeypatch.setenv("TALKING_FACE_MODEL", "synctalk")
    assert main(["run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TALKING_FACE_MODEL" in err[0] and "docs/backup-models.md" in err[0]
