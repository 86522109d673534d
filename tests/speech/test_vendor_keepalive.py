"""A vendor that keeps its stream alive without ever speaking is a stalled vendor.

A vendor's stream can stay busy with things that are not audio: events whose audio field is
empty, timing events, SSE comments, blank lines, gRPC responses without audio_content. A read
timeout never fires on such a stream, so it must not be what decides: TTS_TIMEOUT_SECONDS
without audio is a stall (Stalled, so speech/resilient.py retries or falls back), from the
start of the answer or after some words. Each vendor's official SDK talks to its local
simulator; nothing of poc is replaced.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator

import pytest

from poc.simulators.azure import KEEPALIVE as AZURE_KEEPALIVE
from poc.simulators.azure import AzureSpeechServer
from poc.simulators.cartesia import CartesiaServer
from poc.simulators.elevenlabs import ElevenLabsServer
from poc.simulators.google import KEEPALIVE as GOOGLE_KEEPALIVE
from poc.simulators.google import GoogleTtsServer
from poc.simulators.voice import VoiceServer
from poc.speech.azure import AzureProvider
from poc.speech.base import SpeechChunk, Stalled
from poc.speech.cartesia import CartesiaProvider
from poc.speech.elevenlabs import ElevenLabsProvider
from poc.speech.google_tts import GoogleProvider
from poc.speech.resilient import ResilientSpeech

pytestmark = pytest.mark.slow  # each waits out a stall timeout against a live simulator

TEXT = "Hello there, my map of Bombay. The weather is fine today."
TIMEOUT_S = 0.5
PATIENCE_S = 20.0  # far past any stall timeout here: still waiting then means waiting for ever
AZURE_KEY = "az-secret-0123456789abcdef"
GOOGLE_KEY = "AIzaSy-google-secret-0123456789"

HTTP_VENDORS = {
    "ElevenLabs": (ElevenLabsServer, ElevenLabsProvider),
    "Cartesia": (CartesiaServer, CartesiaProvider),
}


def outcome(stream: Iterable[SpeechChunk], patience_s: float = PATIENCE_S) -> tuple[object, int]:
    """(what reading all of `stream` ended in: "finished", the exception, or "still waiting"
    after `patience_s`; the samples heard). Read on a thread of its own, so a stream that never
    ends fails the test instead of hanging it."""
    ended: list[object] = []
    heard = [0]

    def read() -> None:
        try:
            for chunk in stream:
                heard[0] += len(chunk.audio)
            ended.append("finished")
        except BaseException as error:  # noqa: BLE001 - the outcome is what the test checks
            ended.append(error)

    reader = threading.Thread(target=read, name="keepalive-reader", daemon=True)
    reader.start()
    reader.join(patience_s)
    return (ended[0] if ended else "still waiting"), heard[0]


@pytest.mark.parametrize("stall_after", [0, 2], ids=["from-the-start", "mid-utterance"])
@pytest.mark.parametrize("fault", ["keepalive", "ping"], ids=["audio-less-events", "keep-alive-bytes"])
@pytest.mark.parametrize("vendor", sorted(HTTP_VENDORS))
def test_an_http_vendor_that_only_keeps_alive_is_stalled(vendor: str, fault: str, stall_after: int) -> None:
    server_class, provider_class = HTTP_VENDORS[vendor]
    server: VoiceServer
    with server_class() as server:
        server.faults.append(fault)
        server.stall_after = stall_after
        server.keepalive_interval = TIMEOUT_S / 5  # always well inside the read timeout
        provider = provider_class(44100, "test-key", base_url=server.url, timeout_s=TIMEOUT_S)
        ended, heard = outcome(provider.synthesize_stream(TEXT))
    assert isinstance(ended, Stalled), ended
    assert vendor in str(ended)
    assert (heard > 0) == (stall_after > 0)  # the words before the stall were on their way


@pytest.mark.parametrize("stall_after", [0, 2], ids=["from-the-start", "mid-utterance"])
def test_azure_sending_only_visemes_is_stalled(stall_after: int) -> None:
    with AzureSpeechServer(AZURE_KEY, stall_after=stall_after, keepalive_s=0.1) as service:
        service.faults.append(AZURE_KEEPALIVE)
        azure = AzureProvider(44100, AZURE_KEY, base_url=service.url, timeout_s=TIMEOUT_S)
        ended, heard = outcome(azure.synthesize_stream(TEXT))
    assert isinstance(ended, Stalled), ended
    assert "azure" in str(ended)
    assert (heard > 0) == (stall_after > 0)


@pytest.mark.parametrize("stall_after", [0, 2], ids=["from-the-start", "mid-utterance"])
def test_google_streaming_responses_without_audio_are_stalled(stall_after: int) -> None:
    with GoogleTtsServer(GOOGLE_KEY, stall_after=stall_after, keepalive_s=0.1) as service:
        service.faults.append(GOOGLE_KEEPALIVE)
        google = GoogleProvider(44100, GOOGLE_KEY, base_url=service.url, timeout_s=TIMEOUT_S)
        ended, heard = outcome(google.synthesize_stream(TEXT))
    assert isinstance(ended, Stalled), ended
    assert "google" in str(ended)
    assert (heard > 0) == (stall_after > 0)


def test_the_fallback_speaks_when_the_vendor_only_keeps_alive(piper_44k) -> None:
    with ElevenLabsServer() as server:
        server.faults.append("keepalive")
        server.stall_after = 0
        server.keepalive_interval = TIMEOUT_S / 5
        vendor = ElevenLabsProvider(44100, "test-key", base_url=server.url, timeout_s=TIMEOUT_S)
        speech = ResilientSpeech([vendor, piper_44k], retries=0)
        ended, heard = outcome(speech.synthesize_stream("Good evening."))
    assert ended == "finished" and heard > 0
    report = speech.report()
    assert report["serving"] == "piper"
    assert "stalled" in report["providers"][0]["last_failure"]


def _slowly(stream: Iterator[SpeechChunk], pause_s: float) -> Iterator[SpeechChunk]:
    """`stream` read by a listener that is busy for `pause_s` after each chunk."""
    for chunk in stream:
        yield chunk
        time.sleep(pause_s)


@pytest.mark.parametrize("vendor", sorted(HTTP_VENDORS))
def test_a_slow_listener_is_not_a_stalled_vendor(vendor: str) -> None:
    """Only time spent waiting on the vendor counts: a listener that takes longer than the
    timeout between chunks (the stream is paced to the picture) hears every word."""
    server_class, provider_class = HTTP_VENDORS[vendor]
    with server_class() as server:
        server.chunk_seconds = 0.5
        provider = provider_class(44100, "test-key", base_url=server.url, timeout_s=TIMEOUT_S)
        ended, heard = outcome(_slowly(provider.synthesize_stream("Hello there."), 1.5 * TIMEOUT_S))
    assert ended == "finished" and heard > 0


def test_google_with_a_slow_listener_hears_every_word() -> None:
    with GoogleTtsServer(GOOGLE_KEY) as service:
        google = GoogleProvider(44100, GOOGLE_KEY, base_url=service.url, timeout_s=TIMEOUT_S)
        ended, heard = outcome(_slowly(google.synthesize_stream("Hello there."), 1.5 * TIMEOUT_S))
    assert ended == "finished" and heard > 0
