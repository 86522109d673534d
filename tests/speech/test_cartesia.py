"""Cartesia through its official SDK, against a local server speaking its documented API."""

from __future__ import annotations

import httpx
import pytest

from poc.simulators.cartesia import VOICES, CartesiaServer
from poc.simulators.voice import speak
from poc.speech.cartesia import DEFAULT_MODEL, DEFAULT_VOICE, CartesiaProvider

from .vendor_cases import TEXT, VendorCase, VendorContract

CASE = VendorCase(
    vendor="Cartesia",
    server=CartesiaServer,
    provider=CartesiaProvider,
    base_url=lambda server: server.url,  # like https://api.cartesia.ai
    stream_rate=30000,
    vendor_rate=24000,
    has_marks=True,
    unknown_voice="11111111-2222-3333-4444-555555555555",
    synthesis=("POST", "/tts/sse", {"model_id": "sonic-3", "transcript": "Hello.", "voice": DEFAULT_VOICE,
               "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 44100}}),
)  # fmt: skip


class TestCartesia(VendorContract):
    case = CASE


@pytest.fixture
def server():
    with CartesiaServer() as server:
        yield server


def test_the_request_is_the_documented_one(server: CartesiaServer) -> None:
    voice = VOICES[2]["id"]
    CartesiaProvider(48000, "test-key", base_url=server.url, model="sonic-3.5").synthesize(
        TEXT, voice=voice, language="de-DE"
    )
    (request,) = server.requests
    assert (request.method, request.path) == ("POST", "/tts/sse")
    assert request.headers["authorization"] == "Bearer test-key"
    assert request.headers["cartesia-version"]  # the API version the SDK was built for
    assert request.json() == {
        "model_id": "sonic-3.5",
        "transcript": TEXT,
        "voice": {"mode": "id", "id": voice},
        "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 48000},
        "add_timestamps": True,
        "language": "de",
    }


def test_defaults_are_a_stock_voice_and_model(server: CartesiaServer) -> None:
    CartesiaProvider(44100, "test-key", base_url=server.url).synthesize("Hi.")
    body = server.requests[0].json()
    assert body["voice"]["id"] == DEFAULT_VOICE and body["model_id"] == DEFAULT_MODEL
    assert body["output_format"]["sample_rate"] == 44100 and "language" not in body


def test_the_simulator_also_takes_the_x_api_key_header_but_needs_a_version(server: CartesiaServer) -> None:
    method, path, body = CASE.synthesis
    with_key = httpx.request(method, server.url + path, json=body, headers={"X-API-Key": "test-key"})
    assert with_key.status_code == 400 and "Cartesia-Version" in with_key.json()["message"]
    versioned = httpx.request(
        method, server.url + path, json=body,
        headers={"X-API-Key": "test-key", "Cartesia-Version": "2026-08-14"},
    )  # fmt: skip
    assert versioned.status_code == 200 and "event: done" in versioned.text


def test_word_timestamps_become_marks_no_later_than_one_network_piece(server: CartesiaServer) -> None:
    provider = CartesiaProvider(44100, "test-key", base_url=server.url)
    chunks = list(provider.synthesize_stream(TEXT))
    utterance = speak(TEXT, 44100)
    offset = 0
    found = []
    for chunk in chunks:
        found += [(offset + m.sample, m.phoneme) for m in chunk.phonemes]
        offset += len(chunk.audio)
    # "map": the m starts with the word; Cartesia sends its time after that audio, so the mark
    # lands at the start of the next chunk at the latest.
    word = next(w for w in utterance.words if w.word == "map")
    start = round(word.start_s * 44100)
    m_marks = [p for p, s in found if s == "m" and start <= p <= start + round(server.chunk_seconds * 44100)]
    assert m_marks


def test_voices_are_listed_from_the_vendor_page_by_page(server: CartesiaServer) -> None:
    voices = CartesiaProvider(44100, "test-key", base_url=server.url).list_voices()
    assert [(v.id, v.name, v.language) for v in voices] == [(v["id"], v["name"], v["language"]) for v in VOICES]
    assert server.requests[0].path.startswith("/voices")
    assert server.requests[0].headers["authorization"] == "Bearer test-key"
