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
- `StallWatch`: the stall timeout as "no audio for timeout_s", for the readers of vendors whose
  streams can stay busy without audio (see its docstring).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import queue
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any, TypeVar

import httpx

from poc.speech.base import BadVendorAudio, SpeechChunk, Stalled, VoiceInfo
from poc.speech.sentences import join_chunks, require_speakable
from poc.speech.stream_resample import PcmChunker, nearest_rate
from poc.speech.vendor_errors import check_language, status_fault, transport_fault

T = TypeVar("T")


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


class StallWatch:
    """A stream is stalled once it has kept us waiting `timeout_s` for audio, whatever else the
    vendor sent meanwhile.

    A read timeout only notices a vendor that sends nothing at all. A vendor can also keep its
    stream busy and never speak: events whose audio is empty, timing events, SSE comments, blank
    lines, gRPC responses without audio. On such a stream no read ever times out and the avatar
    would stay silent for as long as the vendor likes. So the reader counts the time it spends
    waiting on the vendor since the last audio (`waited`, `take`, or every read of an HTTP
    answer asked for under `asking`), and `check` raises Stalled once that reaches `timeout_s`.
    Only waiting counts: a listener busy between chunks (the stream is paced to the picture) is
    not a quiet vendor.
    """

    def __init__(
        self, vendor: str, timeout_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.vendor = vendor
        self.timeout_s = timeout_s
        self.clock = clock
        self._waited_s = 0.0  # waiting on the vendor since its last audio
        self._kept_alive = False  # something that was not audio came since then

    def heard_audio(self) -> None:
        """Audio came: the wait is over."""
        self._waited_s = 0.0
        self._kept_alive = False

    def waited(self, seconds: float) -> None:
        """`seconds` more spent waiting on the vendor, which then sent something."""
        self._waited_s += seconds
        self._kept_alive = True

    def check(self) -> None:
        """Stalled once the vendor has kept us waiting `timeout_s` without audio."""
        if self._waited_s >= self.timeout_s:
            raise self.stalled()

    def left_s(self) -> float:
        """How much longer the vendor may keep us waiting for audio."""
        return max(0.0, self.timeout_s - self._waited_s)

    def stalled(self) -> Stalled:
        seconds = f"{self.timeout_s:g} s"
        if not self._kept_alive:
            return Stalled(f"{self.vendor} sent nothing for {seconds} (the stream stalled)")
        return Stalled(
            f"{self.vendor} sent no audio for {seconds}, only events without any (the stream stalled)"
        )

    def take(self, pieces: "queue.Queue[T]", margin_s: float = 0.0) -> T:
        """The next of `pieces` (filled by a thread reading the vendor); Stalled if none comes
        within what is left of the timeout, plus `margin_s`. The caller says what it was:
        `heard_audio()`, or `check()` for an event without audio."""
        asked = self.clock()
        try:
            piece = pieces.get(timeout=self.left_s() + margin_s)
        except queue.Empty:
            raise self.stalled() from None
        self.waited(self.clock() - asked)
        return piece

    @contextlib.contextmanager
    def asking(self) -> Iterator[None]:
        """Within this block, an HTTP answer asked for through a `watched_http_client` counts
        the waits of its every read against this watch, and raises Stalled from the read once
        they reach the timeout (keep-alive bytes that make no event at all count too). Make the
        request inside the block; its answer may be read anywhere after."""
        token = _ASKING.set(self)
        try:
            yield
        finally:
            _ASKING.reset(token)


# The StallWatch of the stream whose request is being made (see StallWatch.asking).
_ASKING: ContextVar[StallWatch | None] = ContextVar("poc_speech_stall_watch", default=None)


def watched_http_client(timeout_s: float) -> httpx.Client:
    """An httpx client for a vendor SDK: `timeout_s` per read (a vendor sending nothing), and
    answers asked for under `StallWatch.asking` watched read by read."""
    return httpx.Client(
        timeout=timeout_s, follow_redirects=True, event_hooks={"response": [_watch_answer]}
    )


def _watch_answer(response: httpx.Response) -> None:
    watch = _ASKING.get()
    if watch is not None:
        response.stream = _WatchedBody(response.stream, watch)


class _WatchedBody(httpx.SyncByteStream):
    """An answer's body whose reads count against a StallWatch."""

    def __init__(self, body: Any, watch: StallWatch) -> None:
        self._body = body
        self._watch = watch

    def __iter__(self) -> Iterator[bytes]:
        asked = self._watch.clock()
        for part in self._body:
            self._watch.waited(self._watch.clock() - asked)
            self._watch.check()
            yield part
            asked = self._watch.clock()

    def close(self) -> None:
        self._body.close()
