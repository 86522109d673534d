"""ElevenLabs through its official SDK, against a local server speaking its documented API."""

from __future__ import annotations

import numpy as np
import pytest

from poc.simulators.elevenlabs import VOICES, ElevenLabsServer
from poc.simulators.voice import speak
from poc.speech.elevenlabs import DEFAULT_MODEL, DEFAULT_VOICE, ElevenLabsProvider

from .vendor_cases import TEXT, VendorCase, VendorContract

CASE = VendorCase(
    vendor="ElevenLabs",
    server=ElevenLabsServer,
    provider=ElevenLabsProvider,
    base_url=lambda server: server.url,  # like https://api.elevenlabs.io
    stream_rate=30000,
    vendor_rate=32000,
    has_marks=True,
    unknown_voice="AAAAAAAAAAAAAAAAAAAA",
    synthesis=("POST", f"/v1/text-to-speech/{DEFAULT_VOICE}/stream/with-timestamps?output_format=pcm_44100",
               {"text": "Hello."}),
)  # fmt: skip


class TestElevenLabs(VendorContract):
    case = CASE


@pytest.fixture
def server():
    with ElevenLabsServer() as server:
        yield server


def test_the_request_is_the_documented_one(server: ElevenLabsServer) -> None:
    provider = ElevenLabsProvider(44100, "test-key", base_url=server.url, model="eleven_multilingual_v2")
    provider.synthesize(TEXT, voice="JBFqnCBsd6RMkjVDRZzb", language="en-GB")
    (request,) = server.requests
    assert request.method == "POST"
    # A 44.1 kHz stream asks for pcm_44100: no resampling, no decoding beyond base64.
    assert request.path == "/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb/stream/with-timestamps?output_format=pcm_44100"
    assert request.headers["xi-api-key"] == "test-key"
    body = request.json()
    assert body["text"] == TEXT
    assert body["model_id"] == "eleven_multilingual_v2"
    assert body["language_code"] == "en"


def test_defaults_are_a_stock_voice_and_the_low_latency_model(server: ElevenLabsServer) -> None:
    ElevenLabsProvider(48000, "test-key", base_url=server.url).synthesize("Hi.")
    body = server.requests[0].json()
    assert DEFAULT_VOICE in server.requests[0].path and body["model_id"] == DEFAULT_MODEL
    assert "language_code" not in body
    assert "output_format=pcm_48000" in server.requests[0].path


@pytest.mark.parametrize("relative", [False, True], ids=["from-utterance", "from-piece"])
def test_character_timings_become_marks_where_the_sounds_are(server: ElevenLabsServer, relative: bool) -> None:
    server.relative_alignment = relative  # either way of counting lands marks on the same samples
    provider = ElevenLabsProvider(44100, "test-key", base_url=server.url)
    whole = provider.synthesize(TEXT)
    utterance = speak(TEXT, 44100)
    starts = {round(c.start_s * 44100): c.char for c in utterance.chars}
    closed = [m for m in whole.phonemes if m.phoneme in ("m", "b", "p")]
    assert len(closed) == sum(TEXT.count(c) for c in "mbpMBP")
    for mark in closed:
        assert starts[mark.sample].lower() == mark.phoneme  # at the very sample the sound starts
        # ...and the audio there is the quiet murmur of closed lips.
        span = whole.audio[mark.sample : mark.sample + 1000].astype(np.float64)
        assert np.sqrt(np.mean(span**2)) < 2000


def test_voices_are_listed_from_the_vendor(server: ElevenLabsServer) -> None:
    voices = ElevenLabsProvider(44100, "test-key", base_url=server.url).list_voices()
    assert [v.id for v in voices] == [v["voice_id"] for v in VOICES]
    assert voices[0].name == "Rachel" and voices[0].language == "en-US"
    assert server.requests[0].path.startswith("/v1/voices")
    assert server.requests[0].headers["xi-api-key"] == "test-key"
