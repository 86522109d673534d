"""What every cloud voice does the same way around the speech contract, so each vendor module
holds only what is its own: how a voice id is checked, how a request is sent and read.

- `VendorVoice`: the contract's request side. A request is checked completely before anything
  is sent (voice and language by `_resolve`, then the text), so a request that can never succeed
  raises InvalidSpeechRequest from `synthesize_stream` itself, before the first chunk; only
  vendor failures raise from the iterator. Azure and Google build on this directly (their
  credentials and endpoints are their own).
- `ApiVoice`: a `VendorVoice` reached with an API key through the vendor's SDK (ElevenLabs,
  OpenAI, Cartesia): the constructor's checks, the settings every such voice has, the language
  check they share, and the vendor_errors mapping with the vendor's name and the key filled in.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping
from typing import Any

from poc.speech.base import BadVendorAudio, SpeechChunk, VoiceInfo
from poc.speech.sentences import join_chunks, require_speakable
from poc.speech.stream_resample import PcmChunker, nearest_rate
from poc.speech.vendor_errors import check_language, status_fault, transport_fault


class VendorVoice:
    """A SpeechProvider for a cloud voice; subclasses fill in the hooks below."""

    name: str  # the provider's setting name (TTS_PROVIDER), e.g. "elevenlabs"
    vendor: str  # how messages name the vendor, e.g. "ElevenLabs"

    # -- the contract -----------------------------------------------------------------------

    def warm_up(self) -> None:
        """Nothing to load: a cloud voice is ready once constructed."""

    def check_voice(self, voice: str | None, language: str | None) -> None:
        self._resolve(voice, language)

    def synthesize_stream(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> Iterator[SpeechChunk]:
        """Chunks as the vendor streams them. Bad requests raise here, before the first chunk;
        vendor failures raise from the iterator (SpeechError kinds, AuthRejected)."""
        resolved = self._resolve(voice, language)
        require_speakable(text)
        self._check_text(text)
        return self._stream(text, resolved, language)

    def synthesize(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> SpeechChunk:
        return join_chunks(self.synthesize_stream(text, voice, language))

    def list_voices(self) -> list[VoiceInfo]:
        raise NotImplementedError

    # -- the hooks --------------------------------------------------------------------------

    def _resolve(self, voice: str | None, language: str | None) -> Any:
        """What `_stream` takes for this voice (None: the default one) and language; raises
        InvalidSpeechRequest for a voice or language that can never be spoken."""
        raise NotImplementedError

    def _check_text(self, text: str) -> None:
        """InvalidSpeechRequest for speakable text the vendor still refuses (a length limit)."""

    def _stream(self, text: str, voice: Any, language: str | None) -> Iterator[SpeechChunk]:
        """The chunks of one checked request; `voice` is what `_resolve` returned."""
        raise NotImplementedError


class ApiVoice(VendorVoice):
    """A VendorVoice behind an API key and the vendor's SDK (see the module docstring)."""

    default_voice: str  # the voice when neither the settings nor a message name one
    default_model: str
    pcm_rates: tuple[int, ...]  # the raw PCM rates the vendor offers; the nearest is asked for

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
        """`base_url` None: the vendor's public API. Raises ValueError for a rate that is not
        positive or a missing key, and InvalidSpeechRequest for a default voice that is not
        shaped like one of the vendor's."""
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if not api_key:
            raise ValueError(f"{self.vendor} needs an API key (TTS_API_KEY)")
        self.sample_rate = sample_rate
        self.vendor_rate = nearest_rate(sample_rate, self.pcm_rates)
        self.model = model or self.default_model
        self.timeout_s = timeout_s
        self._key = api_key
        self._default = voice or self.default_voice
        self._voice_param(self._default)
        self._client = self._connect(api_key, base_url)

    def _connect(self, api_key: str, base_url: str | None) -> Any:
        """The vendor SDK's client: its own retries off (speech/resilient.py retries) and
        `timeout_s` as its timeout (the stall timeout)."""
        raise NotImplementedError

    def _resolve(self, voice: str | None, language: str | None) -> Any:
        param = self._voice_param(voice or self._default)
        check_language(self.vendor, language)  # the language itself goes to the vendor as is
        return param

    def _voice_param(self, voice: str) -> Any:
        """What the API takes for `voice`; InvalidSpeechRequest for an id the vendor cannot have."""
        raise NotImplementedError

    # -- what the stream readers share -------------------------------------------------------

    def _status_fault(self, status: int, headers: Mapping[str, str] | None, body: Any) -> Exception:
        return status_fault(self.vendor, status, headers, body, self._key)

    def _transport_fault(self, error: BaseException) -> Exception:
        return transport_fault(self.vendor, error, self.timeout_s)

    def _connection_fault(self, error: BaseException, timed_out: bool) -> Exception:
        """For an SDK's connection error that wraps the transport's (its cause says which)."""
        cause = error.__cause__ or (TimeoutError() if timed_out else error)
        return transport_fault(self.vendor, cause, self.timeout_s)

    def _base64_audio(self, data: object) -> bytes:
        """The PCM in a base64 field of a vendor event; b"" for an event without audio."""
        if data is None or data == "":
            return b""
        if not isinstance(data, str):
            raise BadVendorAudio(f"{self.vendor} sent audio that is not a base64 string")
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise BadVendorAudio(f"{self.vendor} sent audio that is not valid base64") from None

    def _last_chunks(self, chunker: PcmChunker, received: float) -> Iterator[SpeechChunk]:
        """The end of a stream: BadVendorAudio if no audio came at all, else what the chunker
        still holds."""
        if received == 0:
            raise BadVendorAudio(f"{self.vendor} answered without any audio")
        last = chunker.finish()
        if last is not None:
            yield last
