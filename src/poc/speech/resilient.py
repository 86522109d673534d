"""Retries, back-off and the fallback chain, written once for every voice.

`ResilientSpeech` wraps the configured provider and its fallbacks (TTS_PROVIDER, then
TTS_FALLBACK_PROVIDER's chain, e.g. `azure,piper`) behind the same speech contract, so the
pipeline never learns which vendor spoke. Every text passes its `text_filter` first
(TTS_TEXT_FILTER; speech/text_filter.py leaves out Markdown, URLs' paths and emoji, which a
voice would read aloud), here, once for every voice of the chain; text left with nothing to
say is refused like text that had nothing to begin with. The rules, per sentence:

- A transient failure (`SpeechError`: 429, 5xx, connection errors, a stream that stalls, audio
  that does not decode) is retried up to `retries` times with exponential back-off and full
  jitter; a vendor's Retry-After is honoured (the wait is at least that long). A Retry-After
  longer than `max_wait_s` is not waited out: the next provider speaks instead.
- `AuthRejected` (401/403) is never retried: the next provider speaks.
- Any other `InvalidSpeechRequest` (an unknown voice, empty text) is the request's fault, not the
  vendor's: it is raised at once and the message is dead-lettered.
- A provider that sends far more audio than the sentence could hold (10 s plus 1 s a
  character: a model stuck in a loop) is cut off there and not retried: the next provider speaks.
- When a provider gives up, it is marked down for `down_s` seconds, so the following sentences
  and messages go straight to the next provider instead of paying for the failure again. After
  its rest it gets one attempt, no retries, while another provider stands behind it (a vendor
  in an outage that stalls costs a TTS_TIMEOUT_SECONDS silence per attempt); if that fails too,
  its rest doubles, up to `max_down_s`. One success makes it the provider it was.
- Only when every provider in the chain failed does the sentence fail, with one line that says
  what each provider did (the pipeline then dead-letters the message).

Pieces are paced so that the stream does not run dry: the first sentence goes to the provider
as it is (the first audio comes as soon as ever), but a later sentence whose synthesis would
outlast the audio already handed on (a short "Hi." before a long sentence) is cut at a clause
mark, else a space, into a piece that can be ready in time; pieces grow as that lead grows.
The time a provider takes per character is learned from the pieces it spoke in this process.
Retries, fallbacks and the runaway bound apply to each piece as to a sentence.

Audio never plays twice: text is spoken sentence by sentence, and when a retry of the same
provider starts a sentence over, the samples already handed on are skipped. A fallback voice
starts the failed sentence from its beginning (its samples do not line up with another voice's),
so a few words may be heard twice in two voices, but none are lost.

Per provider it counts requests, failures by kind and the time to the first audio
(`poc_tts_*` metrics), and `serving` says which provider speaks now (for /healthz).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import attrs
import numpy as np

from poc.speech.base import (
    AuthRejected,
    BadVendorAudio,
    InvalidSpeechRequest,
    PhonemeMark,
    SpeechChunk,
    SpeechError,
    SpeechProvider,
    Throttled,
    VoiceInfo,
)
from poc.speech.sentences import cut_at_clause, join_chunks, require_speakable

log = logging.getLogger(__name__)

# The bound on one sentence's audio (max_sentence_samples): speech runs about 0.07 s a character
# (0.15 at its slowest; an emoji read out by name, about 0.8), so 1 s a character and 10 s more
# for the shortest sentences.
MIN_SENTENCE_SECONDS = 10.0
SECONDS_PER_CHARACTER = 1.0

# Pacing (see the module docstring). Before a provider has spoken a piece of MIN_PIECE_CHARS,
# its synthesis is taken to cost DEFAULT_SYNTHESIS_S_PER_CHAR: piper on two busy cores, about
# twice what it takes when idle (0.1-0.2 s of CPU per second of speech, 0.07 s a character).
# A piece is sized to use PACE_MARGIN of the lead only: synthesis slows when the cores are busy.
MIN_PIECE_CHARS = 35  # shorter pieces sound choppy (each ends in a voice's sentence fall)
DEFAULT_SYNTHESIS_S_PER_CHAR = 0.03
PACE_MARGIN = 0.8


class SpeechMetrics:
    """What the wrapper reports; poc.metrics.Metrics satisfies it."""

    tts_requests: object
    tts_failures: object
    tts_first_audio: object


@attrs.define
class ProviderHealth:
    """What /healthz says about one provider of the chain."""

    name: str
    down_until: float = float("-inf")
    last_failure: str = ""
    strikes: int = 0  # times it gave up since it last spoke; >0: its next try is a probe

    def is_down(self, now: float) -> bool:
        return now < self.down_until


@attrs.define
class _Lead:
    """The audio of one message handed on but not yet heard: what the next piece's synthesis
    has to finish within for the stream to have no gap."""

    clock: Callable[[], float]
    first_audio_at: float | None = None
    audio_s: float = 0.0
    rate_known: bool = True

    def handed_on(self, samples: int, rate: int | None) -> None:
        if self.first_audio_at is None:
            self.first_audio_at = self.clock()
        if rate:
            self.audio_s += samples / rate
        else:
            self.rate_known = False  # no seconds to count: pace nothing

    def seconds(self) -> float | None:
        """Audio seconds still ahead of the listener; None before the first audio (or with
        audio of unknown rate), when nothing is to be paced."""
        if self.first_audio_at is None or not self.rate_known:
            return None
        return self.audio_s - (self.clock() - self.first_audio_at)


class _GaveUp(Exception):
    """This provider will not speak this sentence (retries spent or auth rejected)."""

    def __init__(self, summary: str) -> None:
        super().__init__(summary)
        self.summary = summary


class ResilientSpeech:
    """A SpeechProvider that retries and falls back across `chain` (primary first)."""

    def __init__(
        self,
        chain: Sequence[SpeechProvider],
        *,
        retries: int = 2,
        metrics: SpeechMetrics | None = None,
        base_delay_s: float = 0.25,
        max_delay_s: float = 4.0,
        max_wait_s: float = 10.0,
        down_s: float = 30.0,
        max_down_s: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
        text_filter: Callable[[str], str] | None = None,
    ) -> None:
        if not chain:
            raise ValueError("ResilientSpeech needs at least one provider")
        self.chain = tuple(chain)
        self.name = self.chain[0].name
        self.sample_rate = getattr(self.chain[0], "sample_rate", None)
        self.retries = retries
        self._metrics = metrics
        self._base_delay_s = base_delay_s
        self._max_delay_s = max_delay_s
        self._max_wait_s = max_wait_s
        self._down_s = down_s
        self._max_down_s = max(down_s, max_down_s)
        self._sleep = sleep
        self._clock = clock
        self._jitter = jitter
        self._text_filter = text_filter
        self._lock = threading.Lock()
        self.health = {p.name: ProviderHealth(p.name) for p in self.chain}
        # Per provider: seconds from a piece's request to its first audio, per character.
        self._synthesis_s_per_char: dict[str, float] = {}

    # -- the contract -----------------------------------------------------------------------

    def check_voice(self, voice: str | None, language: str | None) -> None:
        """A voice names one of the primary's voices; the fallbacks speak with their own."""
        self.chain[0].check_voice(voice, language)

    def synthesize_stream(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> Iterator[SpeechChunk]:
        sentences = self._sentences(text)  # InvalidSpeechRequest before the first chunk
        self.check_voice(voice, language)
        return self._stream(sentences, voice, language)

    def synthesize(
        self, text: str, voice: str | None = None, language: str | None = None
    ) -> SpeechChunk:
        return join_chunks(self.synthesize_stream(text, voice, language))

    def list_voices(self) -> list[VoiceInfo]:
        return self.chain[0].list_voices()

    def warm_up(self) -> None:
        """Load local voices ahead of the first message (vendors need nothing)."""
        for provider in self.chain:
            provider.warm_up()

    @property
    def serving(self) -> str:
        """The provider that would speak the next sentence."""
        now = self._clock()
        for provider in self.chain:
            if not self.health[provider.name].is_down(now):
                return provider.name
        return self.chain[-1].name

    def report(self) -> dict:
        """For /healthz: which voice speaks now and, per provider of the chain, whether it is
        resting after failures and why (one line; never a key)."""
        now = self._clock()
        return {
            "serving": self.serving,
            "providers": [
                {"name": h.name, "down": h.is_down(now), "last_failure": h.last_failure}
                for h in self.health.values()
            ],
        }

    # -- the rules --------------------------------------------------------------------------

    def _sentences(self, text: str) -> list[str]:
        """The sentences to speak of `text` as filtered; InvalidSpeechRequest when none is
        left, saying so when it was the filter that left nothing (only markup, an image, emoji)."""
        if self._text_filter is None:
            return require_speakable(text)
        try:
            return require_speakable(self._text_filter(text))
        except InvalidSpeechRequest:
            require_speakable(text)  # nothing to say even as written: that refusal
            raise InvalidSpeechRequest(
                "the text has nothing to speak once its markup and emoji are left out (TTS_TEXT_FILTER)"
            ) from None

    def _stream(
        self, sentences: Sequence[str], voice: str | None, language: str | None
    ) -> Iterator[SpeechChunk]:
        lead = _Lead(self._clock)
        for sentence in sentences:
            rest = sentence
            while rest:
                piece, rest = self._next_piece(rest, lead)
                yield from self._sentence(piece, voice, language, lead)

    def _next_piece(self, text: str, lead: _Lead) -> tuple[str, str]:
        """What of `text` to synthesise now, and the rest: all of it unless its synthesis
        would outlast the audio still ahead of the listener (the stream would fall silent)."""
        ahead = lead.seconds()
        if ahead is None:  # the message's first audio: as soon as ever, never cut for pacing
            return text, ""
        pace = self._synthesis_s_per_char.get(self.serving, DEFAULT_SYNTHESIS_S_PER_CHAR)
        fits = int(max(0.0, ahead) * PACE_MARGIN / pace)
        return cut_at_clause(text, fits, MIN_PIECE_CHARS)

    def _learn_pace(self, name: str, piece: str, seconds: float) -> None:
        """Learn `name`'s synthesis time per character from a piece it spoke. Slower news is
        believed at once, faster news halfway: a busy machine must not be paced as an idle one.
        Short pieces are left out: a vendor's fixed latency dwarfs their length."""
        if len(piece) < MIN_PIECE_CHARS:
            return
        measured = seconds / len(piece)
        with self._lock:
            known = self._synthesis_s_per_char.get(name, DEFAULT_SYNTHESIS_S_PER_CHAR)
            self._synthesis_s_per_char[name] = max(measured, (known + measured) / 2)

    def _sentence(
        self, sentence: str, voice: str | None, language: str | None, lead: _Lead | None = None
    ) -> Iterator[SpeechChunk]:
        """One sentence (or piece of one) from the first provider that can speak it."""
        tried: list[str] = []
        now = self._clock()
        candidates = [p for p in self.chain if not self.health[p.name].is_down(now)]
        # Every provider marked down: try them all again rather than say nothing.
        order = candidates or self.chain
        for index, provider in enumerate(order):
            # The message's voice belongs to the primary; a fallback uses its own default.
            own_voice = voice if provider is self.chain[0] else None
            # Back from a rest with another voice behind it: one look, not a round of retries
            # spent waiting on a vendor that may still be down. The last resort keeps its retries.
            probing = self.health[provider.name].strikes > 0 and index < len(order) - 1
            retries = 0 if probing else self.retries
            try:
                yield from self._with_retries(provider, sentence, own_voice, language, retries, lead)
                self._mark_up(provider.name)
                return
            except _GaveUp as gave_up:
                tried.append(gave_up.summary)
                self._mark_down(provider.name, gave_up.summary)
                rest = order[index + 1 :]
                if rest:
                    log.warning("%s; speaking with %s", gave_up.summary, rest[0].name)
        raise SpeechError("every voice failed: " + "; ".join(tried))

    def _with_retries(
        self,
        provider: SpeechProvider,
        sentence: str,
        voice: str | None,
        language: str | None,
        retries: int,
        lead: _Lead | None = None,
    ) -> Iterator[SpeechChunk]:
        emitted = 0  # samples of this sentence already handed on, by any attempt
        attempt = 0
        rate = getattr(provider, "sample_rate", None) or self.sample_rate
        limit = max_sentence_samples(sentence, rate) if rate else float("inf")
        while True:
            attempt += 1
            self._count("tts_requests", provider.name)
            started = self._clock()
            position = 0
            try:
                stream = provider.synthesize_stream(sentence, voice, language)
                with _closing(stream):  # a vendor cut off mid-stream hangs up at once
                    for chunk in stream:
                        if position == 0 and len(chunk.audio):
                            waited = self._clock() - started
                            self._observe_first_audio(provider.name, waited)
                            self._learn_pace(provider.name, sentence, waited)
                        fresh = _after(chunk, emitted - position)
                        position += len(chunk.audio)
                        if position > limit:
                            raise self._runaway(provider, sentence, limit, rate)
                        if fresh is not None:
                            emitted = position
                            if lead is not None:
                                lead.handed_on(len(fresh.audio), rate)
                            yield fresh
                return
            except AuthRejected as error:
                self._count_failure(provider.name, error)
                raise _GaveUp(str(error)) from None
            except InvalidSpeechRequest as error:
                self._count_failure(provider.name, error)
                raise
            except SpeechError as error:
                self._count_failure(provider.name, error)
                wait = self._backoff(attempt, error)
                if attempt > retries or wait is None:
                    tries = f"{attempt} attempt{'s' if attempt > 1 else ''}"
                    raise _GaveUp(f"{provider.name} failed after {tries}: {error}") from None
                log.warning("%s; retry %d of %d in %.2f s", error, attempt, retries, wait)
                self._sleep(wait)

    def _runaway(self, provider: SpeechProvider, sentence: str, limit: float, rate: int) -> _GaveUp:
        """Giving up on a vendor that sent far more audio than the sentence holds (a model
        stuck in a loop). Not retried: what was heard cannot be taken back, and a retry would
        only be skipped up to there."""
        error = BadVendorAudio(
            f"{provider.name} sent more than {limit / rate:.0f} s of audio for a "
            f"{len(sentence)}-character sentence (cut off)"
        )
        self._count_failure(provider.name, error)
        return _GaveUp(str(error))

    def _backoff(self, attempt: int, error: SpeechError) -> float | None:
        """Full-jitter exponential back-off, at least the vendor's Retry-After; None when the
        vendor asks for longer than we are willing to keep a message waiting."""
        ceiling = min(self._max_delay_s, self._base_delay_s * 2 ** (attempt - 1))
        wait = ceiling * (0.5 + 0.5 * self._jitter())
        if isinstance(error, Throttled) and error.retry_after is not None:
            if error.retry_after > self._max_wait_s:
                return None
            wait = max(wait, error.retry_after)
        return wait

    def _mark_down(self, name: str, summary: str) -> None:
        """Rest `name`: down_s, doubled for each time in a row it gave up, up to max_down_s."""
        with self._lock:
            health = self.health[name]
            rest = min(self._max_down_s, self._down_s * 2 ** min(health.strikes, 16))
            health.strikes += 1
            health.down_until = self._clock() + rest
            health.last_failure = summary

    def _mark_up(self, name: str) -> None:
        with self._lock:
            health = self.health[name]
            health.strikes = 0
            health.last_failure = ""

    # -- metrics ----------------------------------------------------------------------------

    def _count(self, attribute: str, provider: str) -> None:
        if self._metrics is not None:
            getattr(self._metrics, attribute).labels(provider=provider).inc()

    def _count_failure(self, provider: str, error: Exception) -> None:
        if self._metrics is not None:
            kind = getattr(error, "kind", "error")
            self._metrics.tts_failures.labels(provider=provider, kind=kind).inc()

    def _observe_first_audio(self, provider: str, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.tts_first_audio.labels(provider=provider).observe(seconds)


def max_sentence_samples(sentence: str, rate: int) -> int:
    """The most audio any voice may make of `sentence` at `rate`: several times the slowest
    speech, so only a vendor gone wrong (audio without end) ever reaches it. It bounds both
    what a viewer hears and what a message keeps in memory until it settles."""
    seconds = MIN_SENTENCE_SECONDS + SECONDS_PER_CHARACTER * len(sentence)
    return round(seconds * rate)


@contextlib.contextmanager
def _closing(stream: Iterator[SpeechChunk]) -> Iterator[None]:
    """Close a provider's stream (a generator: its connection) however its reading ends."""
    try:
        yield
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


def _after(chunk: SpeechChunk, skip: int) -> SpeechChunk | None:
    """The part of `chunk` after its first `skip` samples (marks moved with it); None if empty."""
    if skip <= 0:
        return chunk if len(chunk.audio) else None
    if skip >= len(chunk.audio):
        return None
    audio: np.ndarray = chunk.audio[skip:]
    marks = tuple(
        PhonemeMark(sample=mark.sample - skip, phoneme=mark.phoneme)
        for mark in chunk.phonemes
        if mark.sample >= skip
    )
    return SpeechChunk(audio=audio, phonemes=marks)
