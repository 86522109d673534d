"""Build the configured voices from Settings: the provider, its fallback chain, the wrapper.

Each provider module is imported only when chosen: the vendor SDKs, edge-tts (aiohttp) and
piper (onnxruntime) are each a cost that a deployment using another voice should not pay. The
configured voice and language are checked here, so a typo fails at start-up with the setting's
name rather than on the first message. A vendor's key is only ever passed to its SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from poc.config import ConfigError
from poc.speech.base import InvalidSpeechRequest, SpeechError, SpeechProvider
from poc.speech.resilient import ResilientSpeech, SpeechMetrics
from poc.speech.text_filter import speakable_text

if TYPE_CHECKING:
    from poc.config import Settings

LOCAL_PROVIDERS = ("piper", "espeak", "edge", "pyttsx3")
API_PROVIDERS = ("elevenlabs", "openai", "cartesia", "azure", "google")
PROVIDERS = LOCAL_PROVIDERS + API_PROVIDERS


def create_speech(settings: "Settings", metrics: SpeechMetrics | None = None) -> ResilientSpeech:
    """TTS_PROVIDER and its TTS_FALLBACK_PROVIDER chain behind one retrying wrapper, which
    filters every text first as TTS_TEXT_FILTER says.

    Raises ConfigError naming the setting at fault (unknown provider, a voice or language the
    provider cannot speak, a provider that cannot run here)."""
    primary = build_provider(settings, settings.tts_provider, primary=True)
    try:
        primary.check_voice(settings.tts_voice, settings.tts_language)
    except InvalidSpeechRequest as error:
        # voice or language: the check does not say which of the two it refused
        raise ConfigError(f"{_voice_setting(settings)}/TTS_LANGUAGE: {error}") from None
    chain = [primary]
    for name in settings.tts_fallback_providers:
        chain.append(build_provider(settings, name, primary=False, setting="TTS_FALLBACK_PROVIDER"))
    text_filter = speakable_text if settings.tts_text_filter == "markdown" else None
    return ResilientSpeech(chain, retries=settings.tts_retries, metrics=metrics, text_filter=text_filter)


def build_provider(
    settings: "Settings", name: str, *, primary: bool = True, setting: str = "TTS_PROVIDER"
) -> SpeechProvider:
    """One provider by name, speaking at the stream rate. The configured voice belongs to the
    primary; a fallback speaks with its own default voice and the configured language."""
    key = name.strip().lower()
    if key not in PROVIDERS:
        raise ConfigError(f"{setting}: unknown provider {name!r} ({', '.join(PROVIDERS)})")
    voice = settings.tts_voice if primary else None
    try:
        return _construct(settings, key, voice)
    except InvalidSpeechRequest as error:
        raise ConfigError(f"{_voice_setting(settings)}: {error}") from None
    except SpeechError as error:
        raise ConfigError(f"{setting}: {key} cannot run here: {error}") from None


def _voice_setting(settings: "Settings") -> str:
    """The env name that chose the default voice (TTS_API_VOICE_ID wins for an API provider)."""
    if settings.tts_provider in API_PROVIDERS and settings.tts_api_voice_id:
        return "TTS_API_VOICE_ID"
    return "TTS_VOICE"


def _construct(settings: "Settings", key: str, voice: str | None) -> SpeechProvider:
    rate = settings.sample_rate
    if key == "piper":
        from poc.speech.piper import PiperProvider

        return PiperProvider(rate, voice)
    if key == "espeak":
        from poc.speech.espeak import EspeakProvider

        # espeak-ng has a voice per language, so a language alone picks the voice.
        return EspeakProvider(rate, voice or settings.tts_language)
    if key == "edge":
        from poc.speech.edge import EdgeProvider

        return EdgeProvider(rate, voice)
    if key == "pyttsx3":
        from poc.speech.pyttsx3_voice import Pyttsx3Provider

        return Pyttsx3Provider(rate, voice)
    return _construct_api(settings, key, voice)


def _construct_api(settings: "Settings", key: str, voice: str | None) -> SpeechProvider:
    key_value = settings.tts_api_key.get_secret_value() if settings.tts_api_key else ""
    common = dict(base_url=settings.tts_api_base_url, timeout_s=settings.tts_timeout_seconds)
    if key == "elevenlabs":
        from poc.speech.elevenlabs import ElevenLabsProvider

        return ElevenLabsProvider(settings.sample_rate, key_value, voice, model=settings.tts_model, **common)
    if key == "openai":
        from poc.speech.openai_tts import OpenAIProvider

        return OpenAIProvider(settings.sample_rate, key_value, voice, model=settings.tts_model, **common)
    if key == "cartesia":
        from poc.speech.cartesia import CartesiaProvider

        return CartesiaProvider(settings.sample_rate, key_value, voice, model=settings.tts_model, **common)
    if key == "azure":
        from poc.speech.azure import AzureProvider

        return AzureProvider(settings.sample_rate, key_value, voice, region=settings.azure_speech_region, **common)
    from poc.speech.google_tts import GoogleProvider

    return GoogleProvider(
        settings.sample_rate,
        key_value or None,
        voice,
        credentials_file=settings.google_application_credentials,
        model=settings.tts_model,
        language=settings.tts_language,
        **common,
    )
