"""The speech (TTS) contract.

Providers are synchronous and run in worker threads. `synthesize_stream` yields one chunk per
sentence so the first sentence can go on air while the rest is synthesised. Every chunk is
already resampled to the stream's sample rate, mono int16, so nothing downstream converts.
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


class SpeechError(RuntimeError):
    """A transient failure (engine crashed, service unreachable): worth retrying."""


class InvalidSpeechRequest(ValueError):
    """The request can never succeed (unknown voice, unsupported language): dead-letter it."""


class SpeechProvider(Protocol):
    name: str

    def check_voice(self, voice: str | None, language: str | None) -> None:
        """Raise InvalidSpeechRequest if this voice/language cannot be spoken."""
        ...

    def synthesize_stream(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> Iterator[SpeechChunk]: ...

    def synthesize(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> SpeechChunk: ...
