"""edge-tts: unreachable here, so it must fail as a transient error or hand over to a fallback."""

from __future__ import annotations

import logging
import socket

import anyio
import numpy as np
import pytest

from poc.speech.base import InvalidSpeechRequest, SpeechError
from poc.speech.edge import EdgeProvider
from poc.speech.espeak import EspeakProvider
from poc.speech.piper import PiperProvider

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
    with pytest.raises(SpeechError, match="edge-tts cannot reach its service: .+") as caught:
        edge.synthesize("Hello there.")
    assert "\n" not in str(caught.value) and "SSLContext" not in str(caught.value)


def test_with_a_fallback_the_message_is_spoken_and_warned_about_once(
    dead_proxy: str, piper_48k: PiperProvider, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    edge = EdgeProvider(48000, fallback=piper_48k, proxy=dead_proxy, clock=clock)
    with caplog.at_level(logging.WARNING, logger="poc.speech.edge"):
        chunks = list(edge.synthesize_stream("First sentence here. Then a second one."))
        again = edge.synthesize("Still offline.")
    assert len(chunks) == 2 and all(rms(c.audio) > 1000 for c in chunks)
    assert chunks[0].phonemes  # the fallback's marks come along
    assert rms(again.audio) > 1000
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cannot reach its service" in warnings[0].getMessage()
    assert "speaking with piper" in warnings[0].getMessage()

    clock.now += 31  # after the quiet period the service is tried (and warned about) again
    with caplog.at_level(logging.WARNING, logger="poc.speech.edge"):
        edge.synthesize("Try again.")
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


def test_the_fallback_keeps_the_requested_language(dead_proxy: str) -> None:
    edge = EdgeProvider(
        48000, voice="en-US-AvaMultilingualNeural", fallback=EspeakProvider(48000),
        proxy=dead_proxy,
    )  # fmt: skip
    with pytest.raises(InvalidSpeechRequest, match="language 'tlh' has no espeak-ng voice"):
        edge.synthesize("Hello.", language="tlh")
    assert rms(edge.synthesize("Guten Tag.", language="de").audio) > 500


@pytest.mark.anyio
async def test_it_runs_from_a_worker_thread_under_any_event_loop(dead_proxy: str) -> None:
    edge = EdgeProvider(16000, fallback=EspeakProvider(16000), proxy=dead_proxy)
    chunk = await anyio.to_thread.run_sync(edge.synthesize, "Hello from a thread.")
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
