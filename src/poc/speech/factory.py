"""Build the configured speech provider (TTS_PROVIDER, TTS_VOICE, TTS_LANGUAGE, TTS_FALLBACK).

Each provider module is imported only when chosen: edge-tts pulls in aiohttp and piper pulls in
onnxruntime, neither of which a deployment using another voice should pay for. The configured
voice and language are checked here, so a typo fails at start-up with the variable's name
rather than on the first message.
"""

from __future__ import annotations

from poc.speech.base import InvalidSpeechRequest, SpeechProvider

PROVIDERS = ("piper", "espeak", "edge")
OFFLINE_PROVIDERS = ("piper", "espeak")


def create_provider(
    name: str,
    sample_rate: int,
    voice: str | None,
    language: str | None,
    fallback: str | None = None,
) -> SpeechProvider:
    """The provider called `name` ("piper" when empty), speaking at `sample_rate`.

    `fallback` names an offline provider for edge to use while its service is unreachable.
    Raises ValueError naming the setting at fault for an unknown provider or fallback, or a
    voice/language the provider cannot speak; SpeechError when the provider cannot run here
    (espeak-ng not installed).
    """
    key = (name or "piper").strip().lower()
    if key not in PROVIDERS:
        raise ValueError(f"TTS_PROVIDER: unknown provider {name!r} ({', '.join(PROVIDERS)})")
    backup: SpeechProvider | None = None
    if fallback:
        fallback_key = fallback.strip().lower()
        if key != "edge":
            raise ValueError(
                f"TTS_FALLBACK: only the edge provider uses a fallback (provider is {key!r})"
            )
        if fallback_key not in OFFLINE_PROVIDERS:
            raise ValueError(
                f"TTS_FALLBACK: unknown fallback {fallback!r} ({', '.join(OFFLINE_PROVIDERS)})"
            )
        backup = _build(fallback_key, sample_rate, None, language, None)
    provider = _build(key, sample_rate, voice, language, backup)
    try:
        provider.check_voice(voice, language)
    except InvalidSpeechRequest as error:
        raise ValueError(f"TTS_VOICE/TTS_LANGUAGE: {error}") from error
    return provider


def _build(
    key: str,
    sample_rate: int,
    voice: str | None,
    language: str | None,
    fallback: SpeechProvider | None,
) -> SpeechProvider:
    try:
        if key == "piper":
            from poc.speech.piper import PiperProvider

            return PiperProvider(sample_rate, voice)
        if key == "espeak":
            from poc.speech.espeak import EspeakProvider

            # espeak-ng has a voice per language, so a language alone picks the voice.
            return EspeakProvider(sample_rate, voice or language)
        from poc.speech.edge import EdgeProvider

        return EdgeProvider(sample_rate, voice, fallback)
    except InvalidSpeechRequest as error:
        raise ValueError(f"TTS_VOICE: {error}") from error
