"""Cloud voices over a month on air: what every message costs must be given back.

A station speaks thousands of sentences a day, each one a vendor request. Whatever a request
opens (a connection, the SDK's native threads) must be closed when the sentence ends, whether
it was spoken to the end or abandoned halfway (an interrupt, a re-plan). Counted from the
process's own /proc entries, so the SDKs' native threads count too.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from poc.simulators.azure import AzureSpeechServer
from poc.simulators.elevenlabs import ElevenLabsServer
from poc.simulators.openai import OpenAIServer
from poc.simulators.voice import speak
from poc.speech.azure import AzureProvider
from poc.speech.base import BadVendorAudio, SpeechError
from poc.speech.elevenlabs import ElevenLabsProvider
from poc.speech.openai_tts import OpenAIProvider
from poc.speech.resample import resample_int16
from poc.speech.resilient import ResilientSpeech

KEY = "az-secret-0123456789abcdef"
TEXT = "Hello there, my map of Bombay."
SENTENCES = 12


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def _settled(count: Callable[[], int], ceiling: int, patience_s: float = 10.0) -> int:
    """`count()` once it is at most `ceiling`, or after `patience_s` (closing is asynchronous)."""
    deadline = time.monotonic() + patience_s
    while True:
        gc.collect()
        value = count()
        if value <= ceiling or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


@pytest.fixture
def service() -> Iterator[AzureSpeechServer]:
    with AzureSpeechServer(KEY, pace_s=0.0) as server:
        yield server


@pytest.mark.slow  # a dozen sentences through the Speech SDK
@pytest.mark.parametrize("abandoned", [False, True], ids=["spoken-to-the-end", "abandoned-halfway"])
def test_azure_sentences_give_back_their_connections_and_threads(
    service: AzureSpeechServer, abandoned: bool
) -> None:
    azure = AzureProvider(44100, KEY, base_url=service.url, timeout_s=5.0)

    def speak_one() -> None:
        stream = azure.synthesize_stream(TEXT)
        for index, _chunk in enumerate(stream):
            if abandoned and index == 1:
                stream.close()  # what an interrupt does to the sentence being spoken
                break

    speak_one()  # the SDK's own process-wide threads start with the first request
    threads, files = _settled(_threads, 0, 1.0), _open_files()
    for _ in range(SENTENCES):
        speak_one()
    # A few threads of slack for the SDK's pools; a leak costs several per sentence.
    assert _settled(_threads, threads + 4) <= threads + 4
    assert _settled(_open_files, files + 2) <= files + 2


def test_a_vendor_that_never_stops_talking_is_cut_off_and_the_fallback_says_the_sentence(piper_44k) -> None:
    """A model stuck in a loop streams the same words for ever: without a bound the station
    says them for ever, the message never settles and its kept speech grows without end."""
    with OpenAIServer() as server:
        server.faults.append("endless")
        vendor = OpenAIProvider(44100, "test-key", base_url=server.url, timeout_s=5.0)
        speech = ResilientSpeech([vendor, piper_44k], retries=2)
        heard = 0
        for chunk in speech.synthesize_stream("Hello there."):
            heard += len(chunk.audio)
            assert heard < 44100 * 120, "two minutes of audio for two words: the vendor was never cut off"
        report = speech.report()
        assert report["serving"] == "piper"
        assert "audio" in report["providers"][0]["last_failure"]
        assert len(server.requests) == 1  # a looping vendor is not asked again for the sentence


class _Clock:
    """The wrapper's clock for rests between messages; the vendor's stalls still take real time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.slow  # piper says 11 sentences and 7 stalls are waited out: seconds
def test_a_vendor_in_a_long_outage_is_not_waited_for_again_and_again(piper_44k) -> None:
    """ElevenLabs stops answering for an hour (every request stalls). Each time its rest ends,
    the next sentence waits for it again: TTS_TIMEOUT_SECONDS per attempt, every attempt, in
    silence. Messages a little over the rest apart paid the full retries every time."""
    timeout_s = 0.3
    with ElevenLabsServer() as server:
        server.stall_after = 0  # the connection opens, no audio ever comes
        server.faults.extend(["stall"] * 100)
        vendor = ElevenLabsProvider(44100, "test-key", base_url=server.url, timeout_s=timeout_s)
        clock = _Clock()
        speech = ResilientSpeech([vendor, piper_44k], retries=2, clock=clock, sleep=lambda _s: None)
        for _message in range(10):
            assert len(speech.synthesize("Good evening.").audio) > 0  # piper always said it
            clock.now += 31.0  # the next message comes just after the rest is over
        waits = len(server.requests)
        # The first message tries 3 times; later ones may look in on it now and then, not 3 times each.
        assert waits <= 7, f"{waits} attempts of {timeout_s} s of silence each for 10 messages"
        # The outage ends: within a few minutes the vendor speaks again.
        server.faults.clear()
        clock.now += 600.0
        speech.synthesize("Good evening.")
        assert speech.report()["serving"] == "elevenlabs"
        assert server.requests[-1].path.startswith("/v1/text-to-speech/")
        assert len(server.requests) == waits + 1


def test_an_openai_compatible_server_answering_mp3_is_refused_not_played_as_noise() -> None:
    """TTS_API_BASE_URL may point at a proxy or an OpenAI-compatible server that ignores
    response_format="pcm" and answers MP3: read as raw samples, that is full-scale noise on air."""
    with OpenAIServer() as server:
        server.faults.append("mp3")
        vendor = OpenAIProvider(44100, "test-key", base_url=server.url, timeout_s=5.0)
        heard = []
        with pytest.raises(BadVendorAudio, match="OpenAI answered encoded audio"):
            for chunk in vendor.synthesize_stream("Hello there."):
                heard.append(chunk)
        assert heard == []


@pytest.mark.parametrize("fault", ["wav", "mislabelled"])
def test_an_openai_compatible_server_answering_wav_or_mislabelled_pcm_plays_the_speech(fault: str) -> None:
    """A WAV answer's header is not played (44 bytes as samples are a click); raw PCM that a
    proxy labels audio/mpeg is still raw PCM and plays."""
    with OpenAIServer() as server:
        server.faults.append(fault)
        vendor = OpenAIProvider(44100, "test-key", base_url=server.url, timeout_s=5.0)
        audio = vendor.synthesize("Hello there.").audio
    expected = resample_int16(speak("Hello there.", 24000).audio, 24000, 44100)
    np.testing.assert_array_equal(audio, expected)


def test_a_vendor_with_no_fallback_keeps_its_retries_after_a_failure() -> None:
    """With no other voice to turn to, a message after a failed one still gets every retry
    before it is dead-lettered: a blip must not cost more messages than before."""
    with ElevenLabsServer() as server:
        server.stall_after = 0
        server.faults.extend(["500"] * 3 + ["500", "500"])  # the first message's 3 tries, then 2 blips
        vendor = ElevenLabsProvider(44100, "test-key", base_url=server.url, timeout_s=5.0)
        speech = ResilientSpeech([vendor], retries=2, sleep=lambda _s: None)
        with pytest.raises(SpeechError):
            speech.synthesize("Good evening.")
        assert len(speech.synthesize("Good evening.").audio) > 0  # the third try of this one speaks
        assert len(server.requests) == 6
