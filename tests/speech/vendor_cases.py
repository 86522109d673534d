"""The cases every streaming API voice must pass, run against each vendor's local server.

A test module subclasses `VendorContract` with its vendor's `VendorCase`; the vendor's official
SDK (inside the provider) talks HTTP to the simulator, nothing of poc is replaced.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import attrs
import httpx
import numpy as np
import pytest

from poc.simulators.voice import VoiceServer, speak
from support.polling import wait_until
from poc.speech.base import (
    AuthRejected,
    BadVendorAudio,
    InvalidSpeechRequest,
    SpeechChunk,
    Stalled,
    Throttled,
    Unavailable,
)
from poc.speech.resample import resample_int16

from .audio_helpers import rms

TEXT = "Hello there, my map of Bombay."
WRONG_KEY = "sk-wrong-SECRET-4242"


@attrs.frozen
class VendorCase:
    vendor: str  # how errors name it
    server: Callable[[], VoiceServer]
    provider: Callable[..., Any]  # (sample_rate, api_key, *, base_url, timeout_s)
    base_url: Callable[[VoiceServer], str]  # what TTS_API_BASE_URL would be for this server
    stream_rate: int  # a stream rate the vendor does not offer, so resampling is exercised
    vendor_rate: int  # the rate the provider must ask for at stream_rate
    has_marks: bool  # the vendor sends timings
    unknown_voice: str  # well-formed, but not a voice the vendor has
    synthesis: tuple[str, str, dict[str, Any]]  # (method, path, json) of a synthesis request


class VendorContract:
    case: VendorCase

    @pytest.fixture
    def server(self) -> Iterator[VoiceServer]:
        with self.case.server() as server:
            yield server

    def make(self, server: VoiceServer, *, key: str = "test-key", timeout_s: float = 5.0, rate: int | None = None) -> Any:
        return self.case.provider(
            rate or self.case.stream_rate, key, base_url=self.case.base_url(server), timeout_s=timeout_s
        )

    def expected(self, text: str = TEXT) -> np.ndarray:
        """What the server sent, as the stream must hear it."""
        return resample_int16(speak(text, self.case.vendor_rate).audio, self.case.vendor_rate, self.case.stream_rate)

    def test_audio_streams_in_intact_and_starts_before_the_vendor_finishes(self, server: VoiceServer) -> None:
        server.chunk_interval = 0.05  # a vendor generating as it goes: ~1 s for this sentence
        provider = self.make(server)
        chunks: list[SpeechChunk] = []
        arrived: list[float] = []
        for chunk in provider.synthesize_stream(TEXT):
            chunks.append(chunk)
            arrived.append(time.monotonic())
        assert len(chunks) > 3
        audio = np.concatenate([c.audio for c in chunks])
        assert audio.dtype == np.int16
        # Every sample, resampled across the chunk borders exactly as if it had come whole.
        np.testing.assert_array_equal(audio, self.expected())
        assert rms(audio) > 1000
        # The server notes its last piece once its sender moves past it, which on a loaded
        # machine can be just after the client has read it all.
        finished_at = wait_until(lambda: server.finished_at, timeout=5.0, step=0.01)[0]
        assert arrived[0] < finished_at - 0.3  # the first words played long before the last came
        marks = [m for c in chunks for m in c.phonemes]
        if self.case.has_marks:
            assert {"m", "b", "p"} & {m.phoneme for m in marks}
            assert all(0 <= m.sample < len(c.audio) for c in chunks for m in c.phonemes)
        else:
            assert marks == []

    def test_a_429_is_throttled_with_its_retry_after_then_the_next_call_speaks(self, server: VoiceServer) -> None:
        server.faults.append("429")
        server.retry_after = "3"
        provider = self.make(server)
        with pytest.raises(Throttled, match=self.case.vendor) as caught:
            provider.synthesize(TEXT)
        assert caught.value.retry_after == 3.0
        assert len(server.requests) == 1  # the SDK's own retries are off: resilient.py decides
        np.testing.assert_array_equal(provider.synthesize(TEXT).audio, self.expected())

    def test_a_rejected_key_names_the_vendor_never_the_key(self, server: VoiceServer) -> None:
        provider = self.make(server, key=WRONG_KEY)
        with pytest.raises(AuthRejected) as caught:
            provider.synthesize(TEXT)
        message = str(caught.value)
        assert self.case.vendor in message and "401" in message
        assert WRONG_KEY not in message and "SECRET" not in message and "\n" not in message

    def test_a_stream_that_stalls_mid_utterance_raises_stalled_within_the_timeout(self, server: VoiceServer) -> None:
        server.faults.append("stall")
        server.stall_after = 2
        provider = self.make(server, timeout_s=0.5)
        received = 0
        last = time.monotonic()
        with pytest.raises(Stalled, match=self.case.vendor):
            for chunk in provider.synthesize_stream(TEXT):
                received += len(chunk.audio)
                last = time.monotonic()
        waited = time.monotonic() - last
        assert received > 0  # the words before the stall were already on their way
        assert 0.4 < waited < 1.5

    def test_audio_that_does_not_decode_is_bad_vendor_audio(self, server: VoiceServer) -> None:
        server.faults.append("garbage")
        with pytest.raises(BadVendorAudio, match=self.case.vendor):
            self.make(server).synthesize(TEXT)

    def test_an_unreachable_vendor_is_unavailable(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]

        class Nowhere:
            url = f"http://127.0.0.1:{port}"

        provider = self.case.provider(
            self.case.stream_rate, "test-key", base_url=self.case.base_url(Nowhere()), timeout_s=2.0
        )  # fmt: skip
        started = time.monotonic()
        with pytest.raises(Unavailable, match=f"{self.case.vendor} cannot be reached"):
            provider.synthesize(TEXT)
        assert time.monotonic() - started < 2.0

    def test_a_5xx_is_unavailable(self, server: VoiceServer) -> None:
        server.faults.append("500")
        with pytest.raises(Unavailable, match=f"{self.case.vendor} failed \\(HTTP 500\\)"):
            self.make(server).synthesize(TEXT)

    def test_a_voice_the_vendor_does_not_have_is_an_invalid_request(self, server: VoiceServer) -> None:
        provider = self.make(server)
        provider.check_voice(self.case.unknown_voice, None)  # well-formed: only the vendor knows
        with pytest.raises(InvalidSpeechRequest) as caught:
            provider.synthesize(TEXT, voice=self.case.unknown_voice)
        assert not isinstance(caught.value, AuthRejected)

    def test_malformed_voices_and_languages_are_refused_without_a_request(self, server: VoiceServer) -> None:
        provider = self.make(server)
        for voice in (" ", "not a voice!", "../../etc/passwd"):
            with pytest.raises(InvalidSpeechRequest, match="voice"):
                provider.synthesize_stream(TEXT, voice=voice)
        with pytest.raises(InvalidSpeechRequest, match="language tag"):
            provider.check_voice(None, "english please")
        with pytest.raises(InvalidSpeechRequest, match="nothing to speak"):
            provider.synthesize_stream("...")
        assert server.requests == []

    def test_the_simulator_refuses_requests_without_the_key(self, server: VoiceServer) -> None:
        method, path, body = self.case.synthesis
        answer = httpx.request(method, server.url + path, json=body, timeout=5)
        assert answer.status_code == 401

    @pytest.mark.anyio
    async def test_it_runs_from_a_worker_thread_under_any_event_loop(self, server: VoiceServer) -> None:
        provider = self.make(server)
        chunk = await anyio.to_thread.run_sync(provider.synthesize, "Good morning.")
        np.testing.assert_array_equal(chunk.audio, self.expected("Good morning."))
