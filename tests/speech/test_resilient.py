"""The retry and fallback rules every voice shares (speech/resilient.py).

The providers here are scripted stand-ins for a vendor (the vendors themselves are tested against
their simulators in the test_<vendor>.py files); what is under test is the wrapper's rules."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import numpy as np
import pytest

from poc.metrics import Metrics
from poc.speech.base import (
    AuthRejected,
    InvalidSpeechRequest,
    PhonemeMark,
    SpeechChunk,
    SpeechError,
    Stalled,
    Throttled,
    Unavailable,
    VoiceInfo,
)
from poc.speech.resilient import ResilientSpeech


class Scripted:
    """Speaks each sentence as chunks of 100 samples numbered 1, 2, 3... Each call pops the next
    plan: None (speak it all) or (chunks to send, then the error to raise)."""

    def __init__(self, name: str, plans: list | None = None, chunks: int = 3) -> None:
        self.name = name
        self.plans = deque(plans or [])
        self.chunks = chunks
        self.calls: list[tuple[str, str | None]] = []

    def warm_up(self) -> None:
        pass

    def check_voice(self, voice: str | None, language: str | None) -> None:
        if voice == "nobody":
            raise InvalidSpeechRequest(f"unknown voice {voice!r} for {self.name}")

    def synthesize_stream(self, text: str, voice=None, language=None) -> Iterator[SpeechChunk]:
        self.calls.append((text, voice))
        plan = self.plans.popleft() if self.plans else None
        return self._run(plan)

    def _run(self, plan) -> Iterator[SpeechChunk]:
        sent, error = (self.chunks, None) if plan is None else plan
        for number in range(1, sent + 1):
            yield SpeechChunk(
                audio=np.full(100, number, np.int16), phonemes=(PhonemeMark(10 * number, "a"),)
            )
        if error is not None:
            raise error

    def synthesize(self, text, voice=None, language=None):
        raise NotImplementedError

    def list_voices(self) -> list[VoiceInfo]:
        return [VoiceInfo(id=f"{self.name}-1", name="One", language="en-US")]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def wrap(*chain, retries: int = 2, metrics: Metrics | None = None, clock: FakeClock | None = None):
    clock = clock or FakeClock()
    return ResilientSpeech(
        chain, retries=retries, metrics=metrics, sleep=clock.sleep, clock=clock, jitter=lambda: 1.0
    )


def samples(chunks) -> list[int]:
    return [int(c.audio[0]) for c in chunks]


def test_a_retry_after_a_mid_sentence_failure_never_plays_audio_twice() -> None:
    vendor = Scripted("vendor", [(2, Unavailable("vendor failed (HTTP 503)"))])
    chunks = list(wrap(vendor).synthesize_stream("One sentence."))
    # Chunks 1 and 2 went out before the fault; the retry starts over and only 3 is new.
    assert samples(chunks) == [1, 2, 3]
    assert sum(len(c.audio) for c in chunks) == 300
    assert len(vendor.calls) == 2


class Rechunking(Scripted):
    """First attempt: one 100-sample chunk, then a fault. Second: the same 200 samples as one
    chunk with marks at 50 and 150 (a vendor's chunks need not line up between attempts)."""

    def _run(self, plan) -> Iterator[SpeechChunk]:
        ramp = np.arange(200, dtype=np.int16)
        if len(self.calls) == 1:
            yield SpeechChunk(audio=ramp[:100])
            raise Unavailable("reset")
        yield SpeechChunk(audio=ramp, phonemes=(PhonemeMark(50, "m"), PhonemeMark(150, "a")))


def test_a_chunk_cut_by_the_skip_keeps_its_later_marks_in_place() -> None:
    chunks = list(wrap(Rechunking("vendor")).synthesize_stream("Hello."))
    assert [len(c.audio) for c in chunks] == [100, 100]
    assert np.array_equal(np.concatenate([c.audio for c in chunks]), np.arange(200))
    assert chunks[1].phonemes == (PhonemeMark(50, "a"),)


def test_back_off_grows_and_honours_retry_after() -> None:
    clock = FakeClock()
    vendor = Scripted("vendor", [(0, Unavailable("x")), (0, Throttled("busy", retry_after=3.0))])
    list(wrap(vendor, retries=2, clock=clock).synthesize_stream("Hi."))
    assert clock.slept[0] == pytest.approx(0.25)  # first back-off: the base
    assert clock.slept[1] == pytest.approx(3.0)  # Retry-After wins over the 0.5 s back-off


def test_a_retry_after_longer_than_we_wait_goes_to_the_fallback_at_once() -> None:
    clock = FakeClock()
    vendor = Scripted("vendor", [(0, Throttled("busy", retry_after=120.0))])
    local = Scripted("piper")
    chunks = list(wrap(vendor, local, clock=clock).synthesize_stream("Hi."))
    assert samples(chunks) == [1, 2, 3]
    assert clock.slept == []
    assert [c[0] for c in local.calls] == ["Hi."]


def test_a_rejected_key_is_never_retried_and_the_fallback_speaks_with_its_own_voice() -> None:
    vendor = Scripted("elevenlabs", [(0, AuthRejected("elevenlabs rejected the API key (HTTP 401)"))])
    local = Scripted("piper")
    speech = wrap(vendor, local)
    chunks = list(speech.synthesize_stream("Hello there.", voice="rachel"))
    assert samples(chunks) == [1, 2, 3]
    assert vendor.calls == [("Hello there.", "rachel")]
    assert local.calls == [("Hello there.", None)]
    assert speech.serving == "piper"


def test_a_provider_that_gave_up_is_skipped_until_its_rest_is_over() -> None:
    clock = FakeClock()
    vendor = Scripted("azure", [(0, Stalled("stalled")), (0, Stalled("stalled")), (0, Stalled("x"))])
    local = Scripted("piper")
    speech = wrap(vendor, local, retries=2, clock=clock)
    list(speech.synthesize_stream("One. Two."))
    # "One." cost azure three attempts; "Two." went straight to piper.
    assert len(vendor.calls) == 3
    assert [c[0] for c in local.calls] == ["One.", "Two."]
    clock.now += 31
    assert speech.serving == "azure"
    list(speech.synthesize_stream("Three."))
    assert vendor.calls[-1][0] == "Three."


def test_when_every_voice_fails_the_error_says_what_each_did() -> None:
    vendor = Scripted("openai", [(0, AuthRejected("openai rejected the API key (HTTP 401)"))])
    local = Scripted("espeak", [(0, SpeechError("espeak-ng crashed"))] * 3)
    with pytest.raises(SpeechError) as caught:
        list(wrap(vendor, local).synthesize_stream("Hi."))
    text = str(caught.value)
    assert text.startswith("every voice failed: openai rejected the API key (HTTP 401); ")
    assert "espeak failed after 3 attempts: espeak-ng crashed" in text


def test_a_bad_request_is_the_message_s_fault_and_no_fallback_is_tried() -> None:
    local = Scripted("piper")
    speech = wrap(Scripted("vendor"), local)
    with pytest.raises(InvalidSpeechRequest, match="unknown voice 'nobody'"):
        speech.synthesize_stream("Hi.", voice="nobody")
    with pytest.raises(InvalidSpeechRequest):
        speech.synthesize_stream("   ")
    assert local.calls == []


def test_requests_failures_by_kind_and_first_audio_are_counted_per_provider() -> None:
    metrics = Metrics()
    vendor = Scripted("cartesia", [(0, Throttled("busy", 0.1)), (1, Unavailable("x"))])
    list(wrap(vendor, metrics=metrics).synthesize_stream("Hi."))
    value = metrics.registry.get_sample_value
    assert value("poc_tts_requests_total", {"provider": "cartesia"}) == 3
    assert value("poc_tts_failures_total", {"provider": "cartesia", "kind": "throttled"}) == 1
    assert value("poc_tts_failures_total", {"provider": "cartesia", "kind": "unavailable"}) == 1
    assert value("poc_tts_first_audio_seconds_count", {"provider": "cartesia"}) == 2


def test_voices_are_the_primary_s() -> None:
    assert wrap(Scripted("google"), Scripted("piper")).list_voices()[0].id == "google-1"


def test_health_says_which_voice_serves_and_why_another_rests() -> None:
    clock = FakeClock()
    speech = wrap(Scripted("elevenlabs", [(0, AuthRejected("elevenlabs rejected the API key (HTTP 401)"))]),
                  Scripted("piper"), clock=clock)  # fmt: skip
    assert speech.report()["serving"] == "elevenlabs"
    list(speech.synthesize_stream("Hi."))
    report = speech.report()
    assert report["serving"] == "piper"
    assert report["providers"][0]["down"] is True
    assert report["providers"][0]["last_failure"] == "elevenlabs rejected the API key (HTTP 401)"
    assert report["providers"][1] == {"name": "piper", "down": False, "last_failure": ""}
