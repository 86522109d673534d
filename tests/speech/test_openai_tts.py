"""OpenAI through its official SDK, against a local server speaking its documented API."""

from __future__ import annotations

import pytest

from poc.simulators.openai import OpenAIServer
from poc.speech.base import BadVendorAudio, InvalidSpeechRequest
from poc.speech.openai_tts import DEFAULT_MODEL, DEFAULT_VOICE, VOICES, OpenAIProvider

from .vendor_cases import TEXT, VendorCase, VendorContract

CASE = VendorCase(
    vendor="OpenAI",
    server=OpenAIServer,
    provider=OpenAIProvider,
    base_url=lambda server: server.url + "/v1",  # like https://api.openai.com/v1
    stream_rate=44100,
    vendor_rate=24000,
    has_marks=False,
    unknown_voice="voice_doesnotexist",
    synthesis=("POST", "/v1/audio/speech",
               {"model": "tts-1", "input": "Hello.", "voice": "alloy", "response_format": "pcm"}),
)  # fmt: skip


class TestOpenAI(VendorContract):
    case = CASE


@pytest.fixture
def server():
    with OpenAIServer() as server:
        yield server


def test_the_request_is_the_documented_one(server: OpenAIServer) -> None:
    provider = OpenAIProvider(48000, "test-key", base_url=server.url + "/v1", model="tts-1-hd")
    provider.synthesize(TEXT, voice="Nova")
    (request,) = server.requests
    assert (request.method, request.path) == ("POST", "/v1/audio/speech")
    assert request.headers["authorization"] == "Bearer test-key"
    assert request.json() == {"model": "tts-1-hd", "input": TEXT, "voice": "nova", "response_format": "pcm"}


def test_defaults_custom_voices_and_a_base_url_without_the_version(server: OpenAIServer) -> None:
    provider = OpenAIProvider(48000, "test-key", base_url=server.url)  # /v1 is added
    provider.synthesize("Hi.")
    provider.synthesize("Hi.", voice="voice_1234")
    first, second = (r.json() for r in server.requests)
    assert (first["model"], first["voice"]) == (DEFAULT_MODEL, DEFAULT_VOICE)
    assert second["voice"] == {"id": "voice_1234"}


def test_pcm_that_ends_in_half_a_sample_is_bad_vendor_audio(server: OpenAIServer) -> None:
    server.faults.append("odd")
    with pytest.raises(BadVendorAudio, match="OpenAI sent PCM that ends in half a sample"):
        OpenAIProvider(44100, "test-key", base_url=server.url + "/v1").synthesize(TEXT)


def test_text_over_the_vendors_limit_is_refused_locally(server: OpenAIServer) -> None:
    with pytest.raises(InvalidSpeechRequest, match="at most 4096 characters"):
        OpenAIProvider(44100, "test-key", base_url=server.url + "/v1").synthesize_stream("a" * 4097)
    assert server.requests == []


def test_the_voice_list_is_the_documented_one_without_a_request(server: OpenAIServer) -> None:
    voices = OpenAIProvider(44100, "test-key", base_url=server.url + "/v1").list_voices()
    assert [v.id for v in voices] == list(VOICES)
    assert {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer",
            "verse"} <= {v.id for v in voices}  # fmt: skip
    assert server.requests == []
