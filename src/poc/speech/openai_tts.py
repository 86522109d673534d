"""OpenAI voices through the official `openai` SDK, streamed as raw PCM.

One `POST /v1/audio/speech` per sentence with `response_format="pcm"`: the answer body is raw
24 kHz 16-bit mono samples, streamed as they are made. The SDK's streaming-response form hands
the body over piece by piece, so the first words go on air from the first piece; pieces are
resampled to the stream rate across their borders (speech/stream_resample.py). OpenAI gives no
timings, so the audio envelope drives the mouth. There is no endpoint that lists voices: the
documented built-in voices are the list, and custom voices (`voice_...` ids) pass through.

The SDK is pointed at `base_url` (TTS_API_BASE_URL, e.g. https://api.openai.com/v1; a bare host
like https://api.openai.com gets the documented /v1 added, the mistake everyone makes once), with
its retries off (speech/resilient.py retries) and `timeout_s` as the stall timeout.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import openai

from poc.speech.base import BadVendorAudio, InvalidSpeechRequest, SpeechChunk, VoiceInfo
from poc.speech.sentences import join_chunks, require_speakable
from poc.speech.stream_resample import PcmChunker
from poc.speech.vendor_errors import (
    TRANSPORT_ERRORS,
    check_language,
    status_fault,
    transport_fault,
)

VENDOR = "OpenAI"
PCM_RATE = 24000  # response_format="pcm" is always 24 kHz mono s16le
DEFAULT_VOICE = "alloy"
DEFAULT_MODEL = "gpt-4o-mini-tts"
MAX_INPUT_CHARS = 4096
VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse",
    "marin", "cedar",
)  # fmt: skip
_CUSTOM_VOICE = re.compile(r"voice_[A-Za-z0-9_-]{1,64}")
_NOT_AUDIO = ("text/", "json", "html", "xml")


def api_root(base_url: str | None) -> str | None:
    """The SDK's base_url for TTS_API_BASE_URL: as given when it has a path (a proxy's own
    prefix), else with the API's /v1 added. None keeps the SDK's default."""
    if not base_url:
        return None
    stripped = base_url.rstrip("/")
    return stripped if urlsplit(stripped).path else stripped + "/v1"


class OpenAIProvider:
    """SpeechProvider for OpenAI text to speech (see the module docstring)."""

    name = "openai"

    def __init__(
        self,
        sample_rate: int,
        api_key: str,
        voice: str | None = None,
        *,
        base_url: str | None = None,
        model: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if not api_key:
            raise ValueError("OpenAI needs an API key (TTS_API_KEY)")
        self.sample_rate = sample_rate
        self.model = model or DEFAULT_MODEL
        self.timeout_s = timeout_s
        self._key = api_key
        self._default = voice or DEFAULT_VOICE
        self._voice_param(self._default)
        self._client = openai.OpenAI(
            api_key=api_key, base_url=api_root(base_url), timeout=timeout_s, max_retries=0
        )

    # -- the contract -----------------------------------------------------------------------

    def check_voice(self, voice: str | None, language: str | None) -> None:
        self._voice_param(voice or self._default)
        check_language(VENDOR, language)  # the models speak what they read; no language field

    def synthesize_stream(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> Iterator[SpeechChunk]:
        """Chunks as OpenAI streams them. Bad requests raise here, before the first chunk."""
        self.check_voice(voice, language)
        require_speakable(text)
        if len(text) > MAX_INPUT_CHARS:
            raise InvalidSpeechRequest(
                f"{VENDOR} speaks at most {MAX_INPUT_CHARS} characters at once"
            )
        return self._stream(text, self._voice_param(voice or self._default))

    def synthesize(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> SpeechChunk:
        return join_chunks(self.synthesize_stream(text, voice, language))

    def list_voices(self) -> list[VoiceInfo]:
        """OpenAI's documented built-in voices (it has no endpoint that lists them); they speak
        whatever language the text is in."""
        return [VoiceInfo(id=v, name=v.capitalize(), language="") for v in VOICES]

    # -- the stream -------------------------------------------------------------------------

    def _stream(self, text: str, voice: Any) -> Iterator[SpeechChunk]:
        chunker = PcmChunker(VENDOR, PCM_RATE, self.sample_rate)
        received = 0
        try:
            with self._client.audio.speech.with_streaming_response.create(
                model=self.model, voice=voice, input=text, response_format="pcm"
            ) as response:
                content_type = response.headers.get("content-type", "").lower()
                if any(marker in content_type for marker in _NOT_AUDIO):
                    answered = content_type.split(";")[0]
                    raise BadVendorAudio(f"{VENDOR} answered {answered} instead of audio")
                for piece in response.iter_bytes():
                    received += len(piece)
                    chunk = chunker.feed(piece)
                    if chunk is not None:
                        yield chunk
        except openai.APIStatusError as error:
            headers = error.response.headers
            raise status_fault(VENDOR, error.status_code, headers, error.body, self._key) from None
        except openai.APIConnectionError as error:  # APITimeoutError too: the cause says which
            timed_out = isinstance(error, openai.APITimeoutError)
            cause = error.__cause__ or (TimeoutError() if timed_out else error)
            raise transport_fault(VENDOR, cause, self.timeout_s) from None
        except TRANSPORT_ERRORS as error:
            raise transport_fault(VENDOR, error, self.timeout_s) from None
        if received == 0:
            raise BadVendorAudio(f"{VENDOR} answered without any audio")
        last = chunker.finish()
        if last is not None:
            yield last

    def _voice_param(self, voice: str) -> Any:
        """What the API takes for `voice`: a built-in name, or {"id": ...} for a custom voice."""
        if voice.lower() in VOICES:
            return voice.lower()
        if _CUSTOM_VOICE.fullmatch(voice):
            return {"id": voice}
        raise InvalidSpeechRequest(
            f"{voice!r} is not an OpenAI voice; built-in voices: {', '.join(VOICES)} "
            "(or a custom voice id like voice_1234)"
        )
