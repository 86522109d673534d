"""TTS settings become a working voice chain, or fail at start-up naming the setting at fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from poc.config import ConfigError, Settings, load_settings
from poc.speech.edge import EdgeProvider
from poc.speech.espeak import EspeakProvider
from poc.speech.factory import create_speech
from poc.speech.piper import PiperProvider
from poc.speech.resilient import ResilientSpeech

from .audio_helpers import rms


def settings_with(**env: str) -> Settings:
    return load_settings(environ=env, env_file=Path("/nonexistent/.env"), check_files=False)


@pytest.mark.parametrize(
    ("env", "kind"),
    [({"TTS_PROVIDER": "piper"}, PiperProvider), ({}, PiperProvider),
     ({"TTS_PROVIDER": " Espeak "}, EspeakProvider), ({"TTS_PROVIDER": "edge"}, EdgeProvider),
     ({"TTS_PROVIDER": "local", "TTS_PROVIDER_LOCAL": "edge-tts"}, EdgeProvider),
     ({"TTS_PROVIDER": "local", "TTS_PROVIDER_LOCAL": "espeak"}, EspeakProvider)],
)  # fmt: skip
def test_each_setting_builds_its_provider_at_the_stream_rate(env: dict[str, str], kind: type) -> None:
    speech = create_speech(settings_with(TTS_SAMPLE_RATE="44100", **env))
    assert isinstance(speech, ResilientSpeech)
    assert isinstance(speech.chain[0], kind)
    assert speech.chain[0].sample_rate == 44100  # type: ignore[attr-defined]


def test_the_fallback_chain_is_built_in_order_with_each_provider_s_own_voice() -> None:
    speech = create_speech(
        settings_with(TTS_PROVIDER="edge", TTS_VOICE="en-GB-SoniaNeural", TTS_FALLBACK_PROVIDER="espeak, piper")
    )
    assert [p.name for p in speech.chain] == ["edge", "espeak", "piper"]
    assert speech.retries == 2


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TTS_VOICE": "amy"}, "TTS_VOICE: unknown voice 'amy' for piper"),
        ({"TTS_LANGUAGE": "de"}, "TTS_VOICE/TTS_LANGUAGE: language 'de' is not spoken"),
        ({"TTS_PROVIDER": "espeak", "TTS_VOICE": "nope"}, "TTS_VOICE/TTS_LANGUAGE: unknown voice 'nope'"),
        ({"TTS_PROVIDER": "edge", "TTS_VOICE": "aria"}, "TTS_VOICE: unknown voice 'aria' for edge"),
    ],
)
def test_bad_voice_settings_fail_at_start_up_naming_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        create_speech(settings_with(**env))
    assert "\n" not in str(caught.value)


def test_espeak_takes_its_voice_from_the_language_alone() -> None:
    speech = create_speech(settings_with(TTS_PROVIDER="espeak", TTS_LANGUAGE="de", TTS_SAMPLE_RATE="16000"))
    assert rms(speech.synthesize("Guten Tag.").audio) > 500


def test_edge_with_a_fallback_speaks_whether_or_not_its_service_answers() -> None:
    speech = create_speech(
        settings_with(TTS_PROVIDER="edge", TTS_FALLBACK_PROVIDER="espeak", TTS_LANGUAGE="en",
                      TTS_SAMPLE_RATE="16000", TTS_RETRIES="0")
    )  # fmt: skip
    assert rms(speech.synthesize("Hello there.").audio) > 500
