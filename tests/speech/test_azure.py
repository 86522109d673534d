"""Azure voices: Microsoft's own Speech SDK against a local service speaking its WebSocket protocol."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import anyio
import numpy as np
import pytest

from poc.face.visemes import viseme_for
from poc.simulators.azure import BAD_AUDIO, STALL, AzureSpeechServer, HttpFault, speech_like
from poc.speech.azure import AzureProvider
from poc.speech.base import (
    AuthRejected,
    BadVendorAudio,
    InvalidSpeechRequest,
    Stalled,
    Throttled,
    Unavailable,
    VoiceInfo,
)
from poc.speech.resample import resample_int16

from .audio_helpers import rms

KEY = "az-secret-0123456789abcdef"
TEXT = "Hello there, maybe we can talk about the weather today."


@pytest.fixture
def service() -> Iterator[AzureSpeechServer]:
    with AzureSpeechServer(KEY) as server:
        yield server


def provider(service: AzureSpeechServer, rate: int = 44100, **kwargs: object) -> AzureProvider:
    return AzureProvider(rate, KEY, base_url=service.url, **kwargs)  # type: ignore[arg-type]


def test_speech_streams_intact_at_the_stream_rate(service: AzureSpeechServer) -> None:
    azure = provider(service)
    first_at = None
    chunks = []
    for chunk in azure.synthesize_stream(TEXT):
        first_at = first_at or time.monotonic()
        chunks.append(chunk)
    audio = np.concatenate([c.audio for c in chunks])
    expected, _ = speech_like(TEXT, 44100)  # 44.1 kHz is offered: no resampling at all
    assert audio.dtype == np.int16 and np.array_equal(audio, expected)
    assert rms(audio) > 2000
    assert len(chunks) > 5  # pieces as they came, not one blob at the end
    assert first_at is not None and first_at < service.finished_at[0]


def test_a_rate_the_service_lacks_is_resampled_from_the_nearest(service: AzureSpeechServer) -> None:
    azure = provider(service, rate=32000)
    audio = azure.synthesize(TEXT).audio
    assert service.turns[0].output_format == "raw-24khz-16bit-mono-pcm"
    vendor, _ = speech_like(TEXT, 24000)
    assert np.array_equal(audio, resample_int16(vendor, 24000, 32000))


def test_the_request_carries_key_voice_format_and_escaped_text(service: AzureSpeechServer) -> None:
    azure = provider(service, voice="de-DE-KatjaNeural")
    azure.synthesize("Fisch & Chips <jetzt>.")
    turn = service.turns[0]
    assert turn.headers["ocp-apim-subscription-key"] == KEY
    assert turn.voice == "de-DE-KatjaNeural"
    assert turn.output_format == "raw-44100hz-16bit-mono-pcm"
    assert "Fisch &amp; Chips &lt;jetzt&gt;." in turn.ssml
    assert turn.context["synthesis"]["audio"]["metadataOptions"]["visemeEnabled"] is True
    azure.synthesize("Hello.", voice="en-US-AriaNeural")  # a message may name another voice
    assert service.turns[1].voice == "en-US-AriaNeural"


def test_visemes_become_mouth_marks_where_the_audio_has_them(service: AzureSpeechServer) -> None:
    chunk = provider(service).synthesize(TEXT)
    _, visemes = speech_like(TEXT, 44100)
    expected = {round(s * 44100): v for s, v in visemes if s * 44100 < len(chunk.audio)}
    exact = [m for m in chunk.phonemes if m.sample in expected]
    # Viseme and audio events come on different SDK threads: a rare late one is moved to the
    # start of the next piece (never earlier than its sound, at most one network frame later).
    assert len(exact) >= 0.9 * len(expected)
    for mark in chunk.phonemes:
        assert any(0 <= mark.sample - at <= 4410 for at in expected)
    window = 441  # 10 ms
    closed = opened = 0
    for mark in exact:
        pose = viseme_for(mark.phoneme)
        assert pose is not None
        level = rms(chunk.audio[mark.sample : mark.sample + window])
        if expected[mark.sample] == 21:  # p b m: the lips are shut and the audio is quiet
            assert mark.phoneme == "m" and pose.open == -1.0 and level < 500
            closed += 1
        else:  # ɑ: the mouth opens wide as the vowel swells
            assert mark.phoneme == "ɑ" and pose.open > 0.7
            assert rms(chunk.audio[mark.sample + 2205 : mark.sample + 2205 + window]) > 3000
            opened += 1
    assert closed >= 10 and opened >= 10


def test_throttling_is_transient_and_the_next_request_succeeds(service: AzureSpeechServer) -> None:
    azure = provider(service)
    service.faults.extend([HttpFault(429, {"Retry-After": "2"})] * 2)  # the SDK retries once itself
    with pytest.raises(Throttled, match=r"^azure is throttling requests \(HTTP 429\)$") as caught:
        azure.synthesize("Hello there.")
    assert caught.value.kind == "throttled"
    assert rms(azure.synthesize("Hello there.").audio) > 2000


@pytest.mark.parametrize("how", ["wrong key", "401", "403"])
def test_a_refused_key_is_permanent_and_never_shown(service: AzureSpeechServer, how: str) -> None:
    if how == "wrong key":
        azure = AzureProvider(44100, "not-" + KEY, base_url=service.url)
    else:
        azure = provider(service)
        service.faults.append(HttpFault(int(how)))
    with pytest.raises(AuthRejected, match=r"^azure rejected the API key \(HTTP 40[13]\)") as caught:
        list(azure.synthesize_stream("Hello there."))
    assert KEY not in str(caught.value)


def test_a_stalled_stream_fails_within_the_timeout(service: AzureSpeechServer) -> None:
    azure = provider(service, timeout_s=1.0)
    service.faults.append(STALL)
    got = []
    started = time.monotonic()
    with pytest.raises(Stalled, match="azure sent nothing for 1 s"):
        for chunk in azure.synthesize_stream(TEXT):
            got.append(chunk)
    assert got  # the stall came mid-utterance, after audio
    assert time.monotonic() - started < 1.0 + 2.0


def test_pcm_that_is_not_whole_samples_is_bad_vendor_audio(service: AzureSpeechServer) -> None:
    service.faults.append(BAD_AUDIO)
    with pytest.raises(BadVendorAudio, match="azure sent PCM that ends in half a sample"):
        provider(service).synthesize("Hello there.")


def test_an_unknown_voice_is_refused_by_the_service_as_permanent(service: AzureSpeechServer) -> None:
    with pytest.raises(InvalidSpeechRequest, match="^azure refused the request: .*Unsupported voice"):
        provider(service).synthesize("Hello.", voice="en-US-NobodyNeural")


def test_bad_voice_names_and_languages_fail_before_any_request(service: AzureSpeechServer) -> None:
    azure = provider(service)
    with pytest.raises(InvalidSpeechRequest, match="unknown voice 'Aria' for azure"):
        azure.check_voice("Aria", None)
    with pytest.raises(InvalidSpeechRequest, match="language 'de' is not spoken by azure voice"):
        azure.synthesize_stream("Hallo.", language="de")
    with pytest.raises(InvalidSpeechRequest, match="nothing to speak"):
        azure.synthesize_stream("...")
    azure.check_voice("en-US-AvaMultilingualNeural", "de")  # multilingual voices speak it
    assert service.turns == []


def test_a_multilingual_voice_is_told_the_language(service: AzureSpeechServer) -> None:
    provider(service, voice="en-US-AvaMultilingualNeural").synthesize("Guten Tag.", language="de-DE")
    assert '<lang xml:lang="de-DE">Guten Tag.</lang>' in service.turns[0].ssml


def test_voices_are_listed_from_the_service(service: AzureSpeechServer) -> None:
    voices = provider(service).list_voices()
    assert VoiceInfo("de-DE-KatjaNeural", "Katja", "de-DE") in voices
    assert len(voices) == 3
    assert service.requests[-1].headers["ocp-apim-subscription-key"] == KEY
    service.faults.append(HttpFault(401))
    with pytest.raises(AuthRejected, match=r"azure rejected the API key \(HTTP 401\)"):
        provider(service).list_voices()


def test_an_unreachable_service_fails_fast_as_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    azure = AzureProvider(44100, KEY, base_url=f"ws://127.0.0.1:{port}", timeout_s=2.0)
    started = time.monotonic()
    with pytest.raises(Unavailable, match="^azure cannot be reached") as caught:
        azure.synthesize("Hello.")
    assert time.monotonic() - started < 2.0
    assert KEY not in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"api_key": ""}, "azure needs an API key"),
        ({"base_url": None}, "azure needs AZURE_SPEECH_REGION"),
        ({"base_url": "ftp://example.com"}, "TTS_API_BASE_URL for azure must be"),
        ({"voice": "Aria"}, "unknown voice 'Aria' for azure"),
    ],
)
def test_configuration_errors_are_one_line(kwargs: dict[str, object], message: str) -> None:
    settings: dict[str, object] = {"api_key": KEY, "base_url": "ws://127.0.0.1:1", **kwargs}
    with pytest.raises(ValueError, match=message):
        AzureProvider(44100, **settings)  # type: ignore[arg-type]


def test_a_region_alone_is_enough_to_configure() -> None:
    assert AzureProvider(48000, KEY, region="westeurope").vendor_rate == 48000


@pytest.mark.anyio
async def test_it_runs_from_a_worker_thread_under_any_event_loop(service: AzureSpeechServer) -> None:
    chunk = await anyio.to_thread.run_sync(provider(service, rate=48000).synthesize, "Hello from a thread.")
    assert rms(chunk.audio) > 2000 and len(chunk.audio) == len(speech_like("Hello from a thread.", 48000)[0])
