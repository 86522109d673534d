"""Cartesia voices through the official `cartesia` SDK, streamed over SSE with word timings.

One `POST /tts/sse` per sentence, asking for raw `pcm_s16le` at the supported rate nearest the
stream's (44.1 and 48 kHz streams get their own rate: no resampling) and for word timestamps.
Audio events go on as they arrive; timestamp events become mouth marks (speech/timings.py) for
the audio still to come. Cartesia sends a word's times once it has made its audio, so a word's
first mark can reach us after that audio left: it then starts at the next chunk (see
PcmChunker), a shift of at most one network piece.

The SDK is pointed at `base_url` (TTS_API_BASE_URL, e.g. https://api.cartesia.ai), with its
retries off (speech/resilient.py retries) and `timeout_s` as the stall timeout. It sends the
key as `Authorization: Bearer` and the `Cartesia-Version` header it was built for.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from itertools import islice

import cartesia

from poc.speech.base import BadVendorAudio, InvalidSpeechRequest, SpeechChunk, VoiceInfo
from poc.speech.sentences import join_chunks, require_speakable
from poc.speech.stream_resample import PcmChunker, nearest_rate
from poc.speech.timings import word_marks
from poc.speech.vendor_errors import (
    TRANSPORT_ERRORS,
    check_language,
    status_fault,
    transport_fault,
)

VENDOR = "Cartesia"
DEFAULT_VOICE = "6ccbfb76-1fc6-48f7-b71d-91ac6298247b"  # the stock voice of Cartesia's examples
DEFAULT_MODEL = "sonic-3"
PCM_RATES = (8000, 16000, 22050, 24000, 44100, 48000)  # documented raw output rates
MAX_VOICES = 1000  # list_voices stops paging here
_VOICE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


class CartesiaProvider:
    """SpeechProvider for Cartesia (see the module docstring)."""

    name = "cartesia"

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
            raise ValueError("Cartesia needs an API key (TTS_API_KEY)")
        self.sample_rate = sample_rate
        self.vendor_rate = nearest_rate(sample_rate, PCM_RATES)
        self.model = model or DEFAULT_MODEL
        self.timeout_s = timeout_s
        self._key = api_key
        self._default = voice or DEFAULT_VOICE
        self._check_id(self._default)
        self._client = cartesia.Cartesia(
            api_key=api_key, base_url=base_url or None, timeout=timeout_s, max_retries=0
        )

    # -- the contract -----------------------------------------------------------------------

    def check_voice(self, voice: str | None, language: str | None) -> None:
        self._check_id(voice or self._default)
        check_language(VENDOR, language)

    def synthesize_stream(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> Iterator[SpeechChunk]:
        """Chunks as Cartesia streams them. Bad requests raise here, before the first chunk."""
        self.check_voice(voice, language)
        require_speakable(text)
        return self._stream(text, voice or self._default, language)

    def synthesize(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> SpeechChunk:
        return join_chunks(self.synthesize_stream(text, voice, language))

    def list_voices(self) -> list[VoiceInfo]:
        try:
            voices = list(islice(self._client.voices.list(limit=100), MAX_VOICES))
        except cartesia.APIStatusError as error:
            raise self._status_error(error) from None
        except cartesia.APIConnectionError as error:
            raise self._connection_error(error) from None
        except TRANSPORT_ERRORS as error:
            raise transport_fault(VENDOR, error, self.timeout_s) from None
        return [
            VoiceInfo(id=v.id, name=v.name or v.id, language=str(v.language or ""))
            for v in voices
        ]

    # -- the stream -------------------------------------------------------------------------

    def _stream(self, text: str, voice_id: str, language: str | None) -> Iterator[SpeechChunk]:
        chunker = PcmChunker(VENDOR, self.vendor_rate, self.sample_rate)
        received = 0
        extra = {"language": language.replace("_", "-").split("-")[0].lower()} if language else {}
        try:
            events = self._client.tts.generate_sse(
                model_id=self.model,
                transcript=text,
                voice={"mode": "id", "id": voice_id},
                output_format={
                    "container": "raw", "encoding": "pcm_s16le", "sample_rate": self.vendor_rate
                },  # fmt: skip
                add_timestamps=True,
                **extra,
            )
            with events:
                for event in events:
                    kind = getattr(event, "type", None)
                    if kind == "chunk":
                        pcm = self._decode(getattr(event, "data", None))
                        received += len(pcm)
                        chunk = chunker.feed(pcm)
                        if chunk is not None:
                            yield chunk
                    elif kind == "timestamps" and event.word_timestamps is not None:
                        stamps = event.word_timestamps
                        rate = self.sample_rate
                        chunker.add_marks(word_marks(stamps.words, stamps.start, stamps.end, rate))
                    elif kind == "error":
                        status = int(getattr(event, "status_code", 0) or 500)
                        said = f"{getattr(event, 'title', '')}: {getattr(event, 'message', '')}"
                        raise status_fault(VENDOR, status, None, said, self._key)
                    elif kind == "done":
                        break
        except cartesia.APIStatusError as error:
            raise self._status_error(error) from None
        except cartesia.APIConnectionError as error:
            raise self._connection_error(error) from None
        except TRANSPORT_ERRORS as error:
            raise transport_fault(VENDOR, error, self.timeout_s) from None
        except ValueError as error:
            if isinstance(error, InvalidSpeechRequest):
                raise  # an error event for a request Cartesia refused
            raise BadVendorAudio(f"{VENDOR} sent events that do not add up: {error}") from None
        if received == 0:
            raise BadVendorAudio(f"{VENDOR} answered without any audio")
        last = chunker.finish()
        if last is not None:
            yield last

    def _status_error(self, error: cartesia.APIStatusError) -> Exception:
        headers = error.response.headers
        return status_fault(VENDOR, error.status_code, headers, error.body, self._key)

    def _connection_error(self, error: cartesia.APIConnectionError) -> Exception:
        timed_out = isinstance(error, cartesia.APITimeoutError)
        cause = error.__cause__ or (TimeoutError() if timed_out else error)
        return transport_fault(VENDOR, cause, self.timeout_s)

    def _decode(self, data: object) -> bytes:
        if data is None or data == "":
            return b""
        if not isinstance(data, str):
            raise BadVendorAudio(f"{VENDOR} sent audio that is not a base64 string")
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise BadVendorAudio(f"{VENDOR} sent audio that is not valid base64") from None

    def _check_id(self, voice: str) -> None:
        if not _VOICE_ID.fullmatch(voice):
            raise InvalidSpeechRequest(
                f"{voice!r} is not a Cartesia voice id (a UUID like {DEFAULT_VOICE}; "
                "list them with `python -m poc voices --provider cartesia`)"
            )
