"""edge-tts: unreachable here, so it must fail as a transient error and the fallback voice speak."""

from __future__ import annotations

import logging
import socket

import anyio
import numpy as np
import pytest

from poc.speech.base import InvalidSpeechRequest, Unavailable, VoiceInfo
from poc.speech.edge import EdgeProvider, voice_infos
from poc.speech.espeak import EspeakProvider
from poc.speech.piper import PiperProvider
from poc.speech.resilient import ResilientSpeech

from .audio_helpers import rms


@pytest.fixture
def dead_proxy() -> str:
    """A proxy address nothing listens on: the service is unreachable whatever the network."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_unreachable_service_is_a_transient_speech_error(dead_proxy: str) -> None:
    edge = EdgeProvider(48000, proxy=dead_proxy)
    with pytest.raises(Unavailable, match="edge-tts cannot reach its service: .+") as caught:
        edge.synthesize("Hello there.")
    assert "\n" not in str(caught.value) and "SSLContext" not in str(caught.value)


def with_fallback(edge: EdgeProvider, fallback, clock: FakeClock | None = None) -> ResilientSpeech:
    """How the service runs edge with TTS_FALLBACK_PROVIDER (speech/factory.py)."""
    return ResilientSpeech([edge, fallback], retries=0, clock=clock or FakeClock())


def test_with_a_fallback_the_message_is_spoken_and_warned_about_once(
    dead_proxy: str, piper_48k: PiperProvider, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    speech = with_fallback(EdgeProvider(48000, proxy=dead_proxy), piper_48k, clock)
    with caplog.at_level(logging.WARNING, logger="poc.speech.resilient"):
        chunks = list(speech.synthesize_stream("First sentence here. Then a second one."))
        again = speech.synthesize("Still offline.")
    assert len(chunks) == 2 and all(rms(c.audio) > 1000 for c in chunks)
    assert chunks[0].phonemes  # the fallback's marks come along
    assert rms(again.audio) > 1000
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cannot reach its service" in warnings[0].getMessage()
    assert "speaking with piper" in warnings[0].getMessage()

    clock.now += 31  # after the quiet period the service is tried (and warned about) again
    with caplog.at_level(logging.WARNING, logger="poc.speech.resilient"):
        speech.synthesize("Try again.")
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


def test_the_fallback_keeps_the_requested_language(dead_proxy: str) -> None:
    edge = EdgeProvider(48000, voice="en-US-AvaMultilingualNeural", proxy=dead_proxy)
    speech = with_fallback(edge, EspeakProvider(48000))
    with pytest.raises(InvalidSpeechRequest, match="language 'tlh' has no espeak-ng voice"):
        speech.synthesize("Hello.", language="tlh")
    assert rms(speech.synthesize("Guten Tag.", language="de").audio) > 500


@pytest.mark.anyio
async def test_it_runs_from_a_worker_thread_under_any_event_loop(dead_proxy: str) -> None:
    speech = with_fallback(EdgeProvider(16000, proxy=dead_proxy), EspeakProvider(16000))
    chunk = await anyio.to_thread.run_sync(speech.synthesize, "Hello from a thread.")
    assert chunk.audio.dtype == np.int16 and rms(chunk.audio) > 500


def test_voice_names_and_languages_are_checked_without_the_network() -> None:
    edge = EdgeProvider(48000)
    edge.check_voice("en-US-AriaNeural", "en-US")
    edge.check_voice("Microsoft Server Speech Text to Speech Voice (de-DE, KatjaNeural)", "de")
    edge.check_voice("zh-CN-liaoning-XiaobeiNeural", "zh")
    edge.check_voice("en-US-EmmaMultilingualNeural", "fr")  # multilingual voices speak any
    with pytest.raises(InvalidSpeechRequest, match="unknown voice 'joe' for edge"):
        edge.check_voice("joe", None)
    with pytest.raises(InvalidSpeechRequest, match="language 'de' is not spoken by edge voice"):
        edge.synthesize_stream("Hallo.", language="de")
    with pytest.raises(InvalidSpeechRequest, match="unknown voice"):
        EdgeProvider(48000, voice="aria")


def test_voice_list_entries_as_the_service_sends_them() -> None:
    listed = [
        {"Name": "Microsoft Server Speech Text to Speech Voice (en-US, AriaNeural)",
         "ShortName": "en-US-AriaNeural", "Gender": "Female", "Locale": "en-US",
         "FriendlyName": "Microsoft Aria Online (Natural) - English (United States)"},
        {"ShortName": "de-DE-KatjaNeural", "Locale": "de-DE"},
        {"Locale": "xx-XX"},
    ]  # fmt: skip
    assert voice_infos(listed) == [
        VoiceInfo(
            "en-US-AriaNeural", "Microsoft Aria Online (Natural) - English (United States)", "en-US"
        ),
        VoiceInfo("de-DE-KatjaNeural", "de-DE-KatjaNeural", "de-DE"),
    ]


def test_listing_voices_from_an_unreachable_service_is_unavailable(dead_proxy: str) -> None:
    with pytest.raises(Unavailable, match="edge-tts cannot list voices: .+") as caught:
        EdgeProvider(48000, proxy=dead_proxy).list_voices()
    assert "\n" not in str(caught.value)
