"""The speech (TTS) contract.

Providers are synchronous and run in worker threads. `synthesize_stream` yields chunks as the
audio becomes available (one per sentence for local voices, one per network chunk for the
streaming vendors), so the first words go on air while the rest is still being made. Every
chunk is already at the stream's sample rate, mono int16, so nothing downstream converts.

Errors say what to do next, not where they came from:
- `InvalidSpeechRequest`: this request can never succeed (unknown voice, empty text); dead-letter.
- `AuthRejected`: the vendor refused our credentials (401/403); permanent, never retried.
- `SpeechError` and its kinds (`Throttled`, `Unavailable`, `Stalled`, `BadVendorAudio`):
  transient; retried with back-off, then handed to the fallback chain (speech/resilient.py).
"""

from __future__ import annotations

from typing import Iterator, Protocol

import attrs
import numpy as np


@attrs.frozen
class PhonemeMark:
    """A phoneme starting `sample` samples into its chunk (at the stream sample rate)."""

    sample: int
    phoneme: str


@attrs.frozen
class SpeechChunk:
    audio: np.ndarray  # int16, mono, at the stream sample rate
    phonemes: tuple[PhonemeMark, ...] = ()  # empty when the provider gives no timings


@attrs.frozen
class VoiceInfo:
    """One voice a provider offers (`python -m poc voices`)."""

    id: str  # what TTS_VOICE / a message's "voice" takes
    name: str
    language: str  # BCP-47-ish, e.g. "en-US"; "" when the vendor does not say


class SpeechError(RuntimeError):
    """A transient failure (engine crashed, service unreachable): worth retrying.

    `kind` labels the failure in metrics (poc_tts_failures_total{kind=...})."""

    kind = "error"


class Throttled(SpeechError):
    """The vendor said "too many requests" (429); `retry_after` is its Retry-After in seconds."""

    kind = "throttled"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(SpeechError):
    """The vendor failed or could not be reached (5xx, connection refused, TLS, DNS)."""

    kind = "unavailable"


class Stalled(SpeechError):
    """The vendor sent no audio for TTS_TIMEOUT_SECONDS: nothing at all, or only what is not
    audio (keep-alives, events without audio), before its first audio or mid-stream."""

    kind = "stalled"


class BadVendorAudio(SpeechError):
    """The vendor answered with audio that does not decode."""

    kind = "bad_audio"


class InvalidSpeechRequest(ValueError):
    """The request can never succeed (unknown voice, unsupported language): dead-letter it."""

    kind = "invalid"


class AuthRejected(InvalidSpeechRequest):
    """The vendor rejected the key (401/403): never retried; the message is dead-lettered (or
    spoken by the fallback chain) with a one-line reason naming the vendor, never the key."""

    kind = "auth"


class SpeechProvider(Protocol):
    name: str

    def warm_up(self) -> None:
        """Load what the first message would otherwise wait for (a local voice's model); a
        no-op for vendors and for voices with nothing to load. Blocking; called once in a
        worker thread while the stream is already on air. May raise (the first message then
        reports the fault properly)."""
        ...

    def check_voice(self, voice: str | None, language: str | None) -> None:
        """Raise InvalidSpeechRequest if this voice/language cannot be spoken."""
        ...

    def synthesize_stream(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> Iterator[SpeechChunk]: ...

    def synthesize(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> SpeechChunk: ...

    def list_voices(self) -> list[VoiceInfo]:
        """The voices this provider offers (live from the vendor for APIs). May raise
        SpeechError/AuthRejected like synthesis does."""
        ...
