"""Cartesia voices through the official `cartesia` SDK, streamed over SSE with word timings.

One `POST /tts/sse` per sentence, asking for raw `pcm_s16le` at the supported rate nearest the
stream's (44.1 and 48 kHz streams get their own rate: no resampling) and for word timestamps.
Audio events go on as they arrive; timestamp events become mouth marks (speech/timings.py) for
the audio still to come. Cartesia sends a word's times once it has made its audio, so a word's
first mark can reach us after that audio left: it then starts at the next chunk (see
PcmChunker), a shift of at most one network piece.

The SDK is pointed at `base_url` (TTS_API_BASE_URL, e.g. https://api.cartesia.ai), with its
retries off (speech/resilient.py retries) and `timeout_s` as the stall timeout: `timeout_s`
without audio raises Stalled, whether nothing came or only events without audio and SSE
comments (vendor_voice.StallWatch). It sends the key as `Authorization: Bearer` and the
`Cartesia-Version` header it was built for.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import islice

import cartesia

from poc.speech.base import BadVendorAudio, InvalidSpeechRequest, SpeechChunk, VoiceInfo
from poc.speech.stream_resample import PcmChunker
from poc.speech.timings import word_marks
from poc.speech.vendor_errors import TRANSPORT_ERRORS
from poc.speech.vendor_voice import ApiVoice, StallWatch, watched_http_client

VENDOR = "Cartesia"
DEFAULT_VOICE = "6ccbfb76-1fc6-48f7-b71d-91ac6298247b"  # the stock voice of Cartesia's examples
DEFAULT_MODEL = "sonic-3"
PCM_RATES = (8000, 16000, 22050, 24000, 44100, 48000)  # documented raw output rates
MAX_VOICES = 1000  # list_voices stops paging here
_VOICE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_SDK_ERRORS = (cartesia.APIStatusError, cartesia.APIConnectionError, *TRANSPORT_ERRORS)


class CartesiaProvider(ApiVoice):
    """SpeechProvider for Cartesia (see the module docstring)."""

    name = "cartesia"
    vendor = VENDOR
    default_voice = DEFAULT_VOICE
    default_model = DEFAULT_MODEL
    pcm_rates = PCM_RATES

    def _connect(self, api_key: str, base_url: str | None) -> cartesia.Cartesia:
        return cartesia.Cartesia(
            api_key=api_key,
            base_url=base_url or None,
            timeout=self.timeout_s,
            max_retries=0,
            http_client=watched_http_client(self.timeout_s),
        )

    def list_voices(self) -> list[VoiceInfo]:
        try:
            voices = list(islice(self._client.voices.list(limit=100), MAX_VOICES))
        except _SDK_ERRORS as error:
            raise self._fault(error) from None
        return [
            VoiceInfo(id=v.id, name=v.name or v.id, language=str(v.language or ""))
            for v in voices
        ]

    # -- the stream -------------------------------------------------------------------------

    def _stream(self, text: str, voice_id: str, language: str | None) -> Iterator[SpeechChunk]:
        chunker = PcmChunker(VENDOR, self.vendor_rate, self.sample_rate)
        received = 0
        extra = {"language": language.replace("_", "-").split("-")[0].lower()} if language else {}
        watch = StallWatch(VENDOR, self.timeout_s)
        try:
            with watch.asking():  # the request is made here
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
                        pcm = self._base64_audio(getattr(event, "data", None))
                        if pcm:
                            watch.heard_audio()
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
                        raise self._status_fault(status, None, said)
                    elif kind == "done":
                        break
        except _SDK_ERRORS as error:
            raise self._fault(error) from None
        except ValueError as error:
            if isinstance(error, InvalidSpeechRequest):
                raise  # an error event for a request Cartesia refused
            raise BadVendorAudio(f"{VENDOR} sent events that do not add up: {error}") from None
        yield from self._last_chunks(chunker, received)

    def _fault(self, error: BaseException) -> Exception:
        """The contract error for what the SDK or its transport raised (one of _SDK_ERRORS)."""
        if isinstance(error, cartesia.APIStatusError):
            return self._status_fault(error.status_code, error.response.headers, error.body)
        if isinstance(error, cartesia.APIConnectionError):
            return self._connection_fault(error, isinstance(error, cartesia.APITimeoutError))
        return self._transport_fault(error)

    def _voice_param(self, voice: str) -> str:
        if not _VOICE_ID.fullmatch(voice):
            raise InvalidSpeechRequest(
                f"{voice!r} is not a Cartesia voice id (a UUID like {DEFAULT_VOICE}; "
                "list them with `python -m poc voices --provider cartesia`)"
            )
        return voice
