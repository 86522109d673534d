"""OpenAI voices through the official `openai` SDK, streamed as raw PCM.

One `POST /v1/audio/speech` per sentence with `response_format="pcm"`: the answer body is raw
24 kHz 16-bit mono samples, streamed as they are made. The SDK's streaming-response form hands
the body over piece by piece, so the first words go on air from the first piece; pieces are
resampled to the stream rate across their borders (speech/stream_resample.py). OpenAI gives no
timings, so the audio envelope drives the mouth. There is no endpoint that lists voices: the
documented built-in voices are the list, and custom voices (`voice_...` ids) pass through.
An OpenAI-compatible server behind TTS_API_BASE_URL may ignore `response_format`: its answer is
told by its first bytes, a WAV file of the same PCM plays without its header, and encoded audio
(MP3, Ogg, FLAC, MP4) is BadVendorAudio rather than noise on air.

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
from poc.speech.stream_resample import PcmChunker
from poc.speech.vendor_errors import TRANSPORT_ERRORS
from poc.speech.vendor_voice import ApiVoice

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
# What a proxy or an OpenAI-compatible server may answer instead of the raw PCM asked for (its
# Content-Type cannot tell: some proxies label every answer audio/mpeg), told by the first bytes:
# encoded audio (an ID3 tag before MP3, Ogg, FLAC; MP4's "ftyp" at byte 4), which read as samples
# is full-scale noise, and WAV, whose header read as samples is a click.
_ENCODED_MAGIC = (b"ID3", b"OggS", b"fLaC")
MAX_WAV_HEADER = 4096


def api_root(base_url: str | None) -> str | None:
    """The SDK's base_url for TTS_API_BASE_URL: as given when it has a path (a proxy's own
    prefix), else with the API's /v1 added. None keeps the SDK's default."""
    if not base_url:
        return None
    stripped = base_url.rstrip("/")
    return stripped if urlsplit(stripped).path else stripped + "/v1"


class OpenAIProvider(ApiVoice):
    """SpeechProvider for OpenAI text to speech (see the module docstring)."""

    name = "openai"
    vendor = VENDOR
    default_voice = DEFAULT_VOICE
    default_model = DEFAULT_MODEL
    pcm_rates = (PCM_RATE,)

    def _connect(self, api_key: str, base_url: str | None) -> openai.OpenAI:
        return openai.OpenAI(
            api_key=api_key, base_url=api_root(base_url), timeout=self.timeout_s, max_retries=0
        )

    def list_voices(self) -> list[VoiceInfo]:
        """OpenAI's documented built-in voices (it has no endpoint that lists them); they speak
        whatever language the text is in."""
        return [VoiceInfo(id=v, name=v.capitalize(), language="") for v in VOICES]

    # -- the stream -------------------------------------------------------------------------

    def _check_text(self, text: str) -> None:
        if len(text) > MAX_INPUT_CHARS:
            raise InvalidSpeechRequest(
                f"{VENDOR} speaks at most {MAX_INPUT_CHARS} characters at once"
            )

    def _stream(self, text: str, voice: Any, language: str | None) -> Iterator[SpeechChunk]:
        # The models speak what they read: the language is checked (ApiVoice) but not sent.
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
                head: bytes | None = b""  # the answer's first bytes until they show what it is
                for piece in response.iter_bytes():
                    received += len(piece)
                    if head is not None:
                        head += piece
                        start = _pcm_start(head)
                        if start is None:
                            continue
                        piece, head = head[start:], None
                    chunk = chunker.feed(piece)
                    if chunk is not None:
                        yield chunk
                if head:  # an answer too short to show a header: whatever it is, it is not audio
                    raise BadVendorAudio(f"{VENDOR} answered {len(head)} bytes that are not audio")
        except openai.APIStatusError as error:
            headers = error.response.headers
            raise self._status_fault(error.status_code, headers, error.body) from None
        except openai.APIConnectionError as error:  # APITimeoutError too: the cause says which
            timed_out = isinstance(error, openai.APITimeoutError)
            raise self._connection_fault(error, timed_out) from None
        except TRANSPORT_ERRORS as error:
            raise self._transport_fault(error) from None
        yield from self._last_chunks(chunker, received)

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


def _pcm_start(head: bytes) -> int | None:
    """Where the raw samples start in the answer's first bytes `head`: 0 for raw PCM, past the
    header for a WAV file of 16-bit mono at PCM_RATE; None while more bytes are needed to tell.
    BadVendorAudio for encoded audio or a WAV file of another shape."""
    if len(head) < 8:
        return None
    if head.startswith(_ENCODED_MAGIC) or head[4:8] == b"ftyp":
        raise BadVendorAudio(f"{VENDOR} answered encoded audio (MP3, Ogg, FLAC or MP4), not raw PCM")
    if not head.startswith(b"RIFF"):
        return 0
    start = _wav_data_start(head)
    if start is None and len(head) > MAX_WAV_HEADER:
        raise BadVendorAudio(f"{VENDOR} answered a WAV file whose header never ends")
    return start


def _wav_data_start(head: bytes) -> int | None:
    """The offset of a WAV file's samples (None: its header is not all in `head` yet), checked
    to be what response_format pcm stands for."""
    if len(head) < 12:
        return None
    if head[8:12] != b"WAVE":
        raise BadVendorAudio(f"{VENDOR} answered a RIFF file that is not WAV audio")
    position, shape = 12, None
    while position + 8 <= len(head):
        kind = head[position : position + 4]
        size = int.from_bytes(head[position + 4 : position + 8], "little")
        body = position + 8
        if kind == b"data":
            if shape != (1, PCM_RATE, 16):
                raise BadVendorAudio(f"{VENDOR} answered WAV audio that is not 16-bit mono at {PCM_RATE} Hz")
            return body
        if kind == b"fmt ":
            if body + 16 > len(head):
                return None
            fmt = head[body : body + 16]
            channels = int.from_bytes(fmt[2:4], "little")
            rate = int.from_bytes(fmt[4:8], "little")
            shape = (channels, rate, int.from_bytes(fmt[14:16], "little"))
        position = body + size + (size & 1)
    return None
