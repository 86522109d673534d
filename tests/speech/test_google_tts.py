"""Google voices: the official google-cloud-texttospeech client against a local gRPC TextToSpeech."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import grpc
import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from poc.simulators.azure import speech_like
from poc.simulators.google import BAD_AUDIO, STALL, GoogleTtsServer, GrpcFault, bearer_claims
from poc.speech.base import (
    AuthRejected,
    BadVendorAudio,
    InvalidSpeechRequest,
    Stalled,
    Throttled,
    Unavailable,
    VoiceInfo,
)
from poc.speech.google_tts import GoogleProvider

from .audio_helpers import rms

KEY = "AIzaSy-google-secret-0123456789"
TEXT = "Hello there, maybe we can talk. The weather is fine today."
STREAMING = "en-US-Chirp3-HD-Charon"
UNARY = "en-US-Neural2-F"


@pytest.fixture
def service() -> Iterator[GoogleTtsServer]:
    with GoogleTtsServer(KEY) as server:
        yield server


def provider(service: GoogleTtsServer, rate: int = 44100, **kwargs: object) -> GoogleProvider:
    return GoogleProvider(rate, KEY, base_url=service.url, **kwargs)  # type: ignore[arg-type]


def test_a_chirp3_voice_streams_intact_at_the_stream_rate(service: GoogleTtsServer) -> None:
    first_at = None
    chunks = []
    for chunk in provider(service).synthesize_stream(TEXT):
        first_at = first_at or time.monotonic()
        chunks.append(chunk)
    audio = np.concatenate([c.audio for c in chunks])
    assert np.array_equal(audio, speech_like(" ".join(["Hello there, maybe we can talk.", "The weather is fine today."]), 44100)[0])
    assert rms(audio) > 2000 and len(chunks) > 5
    assert first_at is not None and first_at < service.finished_at[0]
    call = service.calls[0]
    assert call.method == "StreamingSynthesize"
    config = call.requests[0].streaming_config
    assert config.voice.name == STREAMING and config.voice.language_code == "en-US"
    assert config.streaming_audio_config.audio_encoding.name == "PCM"
    assert config.streaming_audio_config.sample_rate_hertz == 44100
    assert [r.input.text for r in call.requests[1:]] == ["Hello there, maybe we can talk.", "The weather is fine today."]
    assert call.metadata["x-goog-api-key"] == KEY


def test_other_voices_are_spoken_sentence_by_sentence_without_the_wav_header(service: GoogleTtsServer) -> None:
    stream = provider(service, rate=48000, voice=UNARY).synthesize_stream(TEXT)
    first = next(stream)
    assert len(service.calls) == 1  # the first sentence is out before the second is asked for
    chunks = [first, *stream]
    assert len(chunks) == 2
    assert np.array_equal(chunks[0].audio, speech_like("Hello there, maybe we can talk.", 48000)[0])
    assert np.array_equal(chunks[1].audio, speech_like("The weather is fine today.", 48000)[0])
    first, second = (c.requests[0] for c in service.calls)
    assert first.input.text == "Hello there, maybe we can talk." and second.input.text == "The weather is fine today."
    assert first.audio_config.audio_encoding.name == "LINEAR16" and first.audio_config.sample_rate_hertz == 48000
    assert first.voice.name == UNARY


def test_a_message_may_name_another_voice_and_language(service: GoogleTtsServer) -> None:
    german = provider(service).synthesize("Guten Tag.", voice="de-DE-Wavenet-B", language="de")
    assert rms(german.audio) > 2000
    assert service.calls[0].requests[0].voice.language_code == "de-DE"
    with pytest.raises(InvalidSpeechRequest, match="language 'fr' is not spoken by google voice"):
        provider(service).check_voice("de-DE-Wavenet-B", "fr")
    with pytest.raises(InvalidSpeechRequest, match="nothing to speak"):
        provider(service).synthesize_stream("?!")
    assert len(service.calls) == 1


@pytest.mark.parametrize("voice", [STREAMING, UNARY])
def test_throttling_is_transient_with_the_retry_delay_and_the_next_call_succeeds(
    service: GoogleTtsServer, voice: str
) -> None:
    google = provider(service, voice=voice)
    service.faults.append(GrpcFault(grpc.StatusCode.RESOURCE_EXHAUSTED, "Quota exceeded", retry_after_s=2.5))
    with pytest.raises(Throttled, match=r"^google is throttling requests \(RESOURCE_EXHAUSTED\)") as caught:
        google.synthesize("Hello there.")
    assert caught.value.retry_after == 2.5
    assert rms(google.synthesize("Hello there.").audio) > 2000


@pytest.mark.parametrize("how", ["wrong key", "UNAUTHENTICATED", "PERMISSION_DENIED"])
def test_refused_credentials_are_permanent_and_never_shown(service: GoogleTtsServer, how: str) -> None:
    if how == "wrong key":
        google = GoogleProvider(44100, "not-" + KEY, base_url=service.url)
    else:
        google = provider(service)
        service.faults.append(GrpcFault(getattr(grpc.StatusCode, how), f"key {KEY} is bad"))
    with pytest.raises(AuthRejected, match=r"^google rejected the credentials \((UNAUTHENTICATED|PERMISSION_DENIED)\)$") as caught:
        google.synthesize("Hello there.")
    assert KEY not in str(caught.value)


@pytest.mark.parametrize(("voice", "message"), [(STREAMING, "sent nothing for 1 s"), (UNARY, "did not answer within 1 s")])
def test_a_stalled_answer_fails_within_the_timeout(service: GoogleTtsServer, voice: str, message: str) -> None:
    google = provider(service, voice=voice, timeout_s=1.0)
    service.faults.append(STALL)
    got = []
    started = time.monotonic()
    with pytest.raises(Stalled, match=message):
        for chunk in google.synthesize_stream(TEXT):
            got.append(chunk)
    assert time.monotonic() - started < 1.0 + 1.5
    assert bool(got) == (voice == STREAMING)  # the stream stalled mid-utterance, after audio


@pytest.mark.parametrize(("voice", "message"), [(STREAMING, "ends in half a sample"), (UNARY, "not a WAV file")])
def test_audio_that_cannot_be_pcm_is_bad_vendor_audio(service: GoogleTtsServer, voice: str, message: str) -> None:
    service.faults.append(BAD_AUDIO)
    with pytest.raises(BadVendorAudio, match=f"^google sent .*{message}"):
        provider(service, voice=voice).synthesize("Hello there.")


def test_failures_and_unknown_voices_map_to_the_contract(service: GoogleTtsServer) -> None:
    google = provider(service)
    service.faults.append(GrpcFault(grpc.StatusCode.UNAVAILABLE, "backend down"))
    with pytest.raises(Unavailable, match=r"^google cannot be reached or failed \(UNAVAILABLE\): backend down"):
        google.synthesize("Hello.")
    with pytest.raises(InvalidSpeechRequest, match=r"INVALID_ARGUMENT\): Voice 'en-US-Nobody-A' does not exist"):
        google.synthesize("Hello.", voice="en-US-Nobody-A")


def test_voices_are_listed_from_the_service(service: GoogleTtsServer) -> None:
    voices = provider(service).list_voices()
    assert voices == [
        VoiceInfo(STREAMING, STREAMING, "en-US"),
        VoiceInfo(UNARY, UNARY, "en-US"),
        VoiceInfo("de-DE-Wavenet-B", "de-DE-Wavenet-B", "de-DE"),
    ]
    service.faults.append(GrpcFault(grpc.StatusCode.UNAUTHENTICATED))
    with pytest.raises(AuthRejected):
        provider(service).list_voices()


def _service_account_file(tmp_path: Path) -> tuple[Path, str, str]:
    """A throwaway service-account JSON with a fresh RSA key: (path, key id, public key PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "poc-test",
        "private_key_id": "kid-123",
        "private_key": private_pem,
        "client_email": "poc-tts@poc-test.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(info))
    return path, "kid-123", public_pem


def test_a_service_account_file_signs_a_bearer_token(tmp_path: Path) -> None:
    path, kid, public_pem = _service_account_file(tmp_path)
    with GoogleTtsServer(api_key=None, service_account_certs={kid: public_pem}) as service:
        google = GoogleProvider(44100, None, base_url=service.url, credentials_file=str(path))
        assert rms(google.synthesize("Hello there.").audio) > 2000  # the server verified the signature
        call = service.calls[0]
        assert "x-goog-api-key" not in call.metadata
        assert bearer_claims(call)["iss"] == "poc-tts@poc-test.iam.gserviceaccount.com"
    # A different key (an impostor's file) is refused.
    other, _, _ = _service_account_file(tmp_path / "impostor")
    with GoogleTtsServer(api_key=None, service_account_certs={kid: public_pem}) as service:
        google = GoogleProvider(44100, None, base_url=service.url, credentials_file=str(other))
        with pytest.raises(AuthRejected, match="UNAUTHENTICATED"):
            google.synthesize("Hello there.")


def test_an_unreachable_service_fails_fast_as_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    google = GoogleProvider(44100, KEY, base_url=f"http://127.0.0.1:{port}", timeout_s=3.0)
    started = time.monotonic()
    with pytest.raises(Unavailable, match=r"UNAVAILABLE") as caught:
        google.synthesize("Hello.")
    assert time.monotonic() - started < 3.0
    assert KEY not in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"api_key": None}, "google needs TTS_API_KEY or GOOGLE_APPLICATION_CREDENTIALS"),
        ({"api_key": None, "credentials_file": "/nonexistent/sa.json"}, "is not a readable service-account file"),
        ({"base_url": "http://tts.example.com"}, "plain http:// only for this machine"),
        ({"base_url": "grpc://127.0.0.1:1"}, "must be an http:// or https:// URL"),
    ],
)
def test_configuration_errors_are_one_line(kwargs: dict[str, object], message: str) -> None:
    settings: dict[str, object] = {"api_key": KEY, "base_url": "http://127.0.0.1:1", **kwargs}
    with pytest.raises(ValueError, match=message):
        GoogleProvider(44100, **settings)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_it_runs_from_a_worker_thread_under_any_event_loop(service: GoogleTtsServer) -> None:
    chunk = await anyio.to_thread.run_sync(provider(service, rate=24000).synthesize, "Hello from a thread.")
    assert np.array_equal(chunk.audio, speech_like("Hello from a thread.", 24000)[0])
