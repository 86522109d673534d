"""The online voice: Microsoft Edge's read-aloud service through edge-tts.

edge-tts is an asyncio library; providers run in worker threads, so each sentence is fetched
with its own short-lived event loop (`asyncio.run` in the worker thread), which keeps the
service's loop apart from the application's (asyncio or trio). The service sends MP3, decoded
with `decode.decode_audio`; it gives word timings but no phonemes, so chunks carry no marks.

Where the service cannot be reached (always, in an offline deployment) a request fails with a
transient `Unavailable`; retries and the fallback voice (TTS_FALLBACK_PROVIDER) are the wrapper's
(speech/resilient.py), as for every other voice.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator, Mapping, Sequence

import aiohttp
import edge_tts
import edge_tts.exceptions
import numpy as np

from poc.speech.base import (
    BadVendorAudio,
    InvalidSpeechRequest,
    SpeechChunk,
    Unavailable,
    VoiceInfo,
)
from poc.speech.decode import InvalidAudio, decode_audio
from poc.speech.sentences import join_chunks, language_matches, require_speakable

LOGGER = logging.getLogger(__name__)

DEFAULT_VOICE = "en-US-AriaNeural"
MAX_SENTENCE_SECONDS = 120.0  # a 300-character sentence is about 20 s of speech
_SHORT_NAME = re.compile(r"^(?P<locale>[a-z]{2,3}-[A-Z]{2,})-.+Neural$")
_LONG_NAME = re.compile(
    r"^Microsoft Server Speech Text to Speech Voice "
    r"\((?P<locale>[a-z]{2,3}-[A-Z]{2,}), .+Neural\)$"
)


class EdgeProvider:
    """SpeechProvider for edge-tts."""

    name = "edge"

    def __init__(
        self,
        sample_rate: int,
        voice: str | None = DEFAULT_VOICE,
        *,
        proxy: str | None = None,
        connect_timeout_s: int = 10,
        receive_timeout_s: int = 60,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = sample_rate
        self._default = voice or DEFAULT_VOICE
        self._proxy = proxy
        self._connect_timeout_s = connect_timeout_s
        self._receive_timeout_s = receive_timeout_s
        voice_locale(self._default)  # a malformed default voice is a configuration error

    def warm_up(self) -> None:
        """Nothing to load: an online voice."""

    def check_voice(self, voice: str | None, language: str | None) -> None:
        self._voice_for(voice, language)

    def list_voices(self) -> list[VoiceInfo]:
        """The service's voice list, live (never the fallback's). Unavailable when the service
        cannot be reached or answers an error, within the receive timeout."""

        async def fetch() -> list[dict]:
            async with asyncio.timeout(self._receive_timeout_s):
                return list(await edge_tts.list_voices(proxy=self._proxy))

        try:
            listed = asyncio.run(fetch())
        except aiohttp.ClientResponseError as error:
            raise Unavailable(f"edge-tts voice list failed (HTTP {error.status})") from None
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as error:
            raise Unavailable(f"edge-tts cannot list voices: {_describe(error)}") from error
        return voice_infos(listed)

    def synthesize_stream(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> Iterator[SpeechChunk]:
        """One chunk per sentence. Bad requests raise here, before the first chunk."""
        name = self._voice_for(voice, language)
        sentences = require_speakable(text)
        return self._stream(name, sentences)

    def synthesize(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> SpeechChunk:
        return join_chunks(self.synthesize_stream(text, voice, language))

    def _voice_for(self, voice: str | None, language: str | None) -> str:
        name = voice or self._default
        locale = voice_locale(name)
        if language and "Multilingual" not in name and not language_matches(language, locale):
            raise InvalidSpeechRequest(
                f"language {language!r} is not spoken by edge voice {name!r} ({locale})"
            )
        return name

    def _stream(self, voice: str, sentences: Sequence[str]) -> Iterator[SpeechChunk]:
        for sentence in sentences:
            audio = self._fetch(voice, sentence)
            if len(audio):
                yield SpeechChunk(audio=audio)

    def _fetch(self, voice: str, sentence: str) -> np.ndarray:
        """One sentence from the service, decoded to int16 at the stream rate."""

        async def collect() -> bytes:
            communicate = edge_tts.Communicate(
                sentence,
                voice,
                proxy=self._proxy,
                connect_timeout=self._connect_timeout_s,
                receive_timeout=self._receive_timeout_s,
            )
            parts = [m["data"] async for m in communicate.stream() if m["type"] == "audio"]
            return b"".join(parts)

        try:
            mp3 = asyncio.run(collect())
        except edge_tts.exceptions.NoAudioReceived:
            raise InvalidSpeechRequest(
                f"edge-tts returned no audio for voice {voice!r} (is it a real voice?)"
            ) from None
        except (aiohttp.ClientConnectionError, TimeoutError, OSError) as error:
            raise Unavailable(f"edge-tts cannot reach its service: {_describe(error)}") from error
        except (aiohttp.ClientError, edge_tts.exceptions.EdgeTTSException) as error:
            raise Unavailable(f"edge-tts service failed: {_describe(error)}") from error
        try:
            return decode_audio(mp3, "mp3", self.sample_rate, MAX_SENTENCE_SECONDS, one_stream=True)
        except InvalidAudio as error:
            raise BadVendorAudio(f"edge-tts sent audio that does not decode: {error}") from error


def voice_infos(listed: Sequence[Mapping[str, object]]) -> list[VoiceInfo]:
    """VoiceInfo for each entry of the service's voice list (ShortName, FriendlyName, Locale),
    skipping entries without a ShortName."""
    voices = []
    for entry in listed:
        short = str(entry.get("ShortName") or "")
        if short:
            name = str(entry.get("FriendlyName") or short)
            voices.append(VoiceInfo(short, name, str(entry.get("Locale") or "")))
    return voices


def voice_locale(voice: str) -> str:
    """'en-US' for 'en-US-AriaNeural'; InvalidSpeechRequest for a name that is not a voice."""
    match = _SHORT_NAME.match(voice) or _LONG_NAME.match(voice)
    if match is None:
        raise InvalidSpeechRequest(
            f"unknown voice {voice!r} for edge; expected a name like {DEFAULT_VOICE} "
            "(list them with `edge-tts --list-voices`)"
        )
    return match.group("locale")


def _describe(error: BaseException) -> str:
    """One readable line: aiohttp's messages embed an SSLContext repr that says nothing."""
    text = re.sub(r"\s*ssl:<[^>]*>", "", str(error))
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
