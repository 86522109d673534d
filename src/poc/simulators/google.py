"""A local Google Cloud Text-to-Speech service: the TextToSpeech gRPC API on 127.0.0.1.

It serves google.cloud.texttospeech.v1.TextToSpeech (ListVoices, SynthesizeSpeech and the
bidirectional StreamingSynthesize) with the SDK's own message classes, so the official client
(google-cloud-texttospeech) talks to it unchanged over a plain-text local channel. Answers follow
the API's documentation: LINEAR16 in a unary response is a WAV file (header and all); a
streaming response is raw PCM ("PCM" encoding) in pieces; errors are gRPC statuses, with
RESOURCE_EXHAUSTED carrying a google.rpc.RetryInfo detail as Google's quota errors do.

Credentials are checked as the real front end does: an `x-goog-api-key` metadata entry equal to
the configured key, or `authorization: Bearer <JWT>` signed by one of the configured service
account keys (the self-signed JWT the SDK makes from a service-account file); anything else is
UNAUTHENTICATED.

Faults (queue them in `faults`, one is taken per call): `GrpcFault(code)` fails the call
outright; `STALL` sends `stall_after` pieces (streaming) or nothing (unary), then hangs;
`KEEPALIVE` (streaming) sends `stall_after` pieces, then responses without audio every
`keepalive_s` for as long as the client listens; `BAD_AUDIO` sends audio that cannot be what
was asked for (a unary answer that is not a WAV file, a stream that ends in half a sample).
"""

from __future__ import annotations

import io
import threading
import time
import wave
from collections import deque
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import attrs
import grpc
from google.auth import exceptions as auth_exceptions
from google.auth import jwt
from google.cloud.texttospeech_v1.types import cloud_tts
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from poc.simulators.azure import speech_like

SERVICE = "google.cloud.texttospeech.v1.TextToSpeech"
DEFAULT_VOICES = (
    ("en-US-Chirp3-HD-Charon", "en-US"),
    ("en-US-Neural2-F", "en-US"),
    ("de-DE-Wavenet-B", "de-DE"),
)


@attrs.frozen
class GrpcFault:
    code: grpc.StatusCode
    message: str = "simulated fault"
    retry_after_s: float | None = None  # sent as google.rpc.RetryInfo


STALL = "stall"
KEEPALIVE = "keepalive"
BAD_AUDIO = "bad_audio"


@attrs.frozen
class Call:
    """One RPC as the client made it."""

    method: str
    metadata: dict[str, str]
    requests: tuple[Any, ...]  # the proto-plus request messages, in order


class GoogleTtsServer:
    """The TextToSpeech service on a local port (plain text: use a local channel)."""

    def __init__(
        self,
        api_key: str | None = "test-google-key",
        *,
        service_account_certs: dict[str, str] | None = None,
        voices: tuple[tuple[str, str], ...] = DEFAULT_VOICES,
        piece_s: float = 0.1,
        pace_s: float = 0.02,
        stall_after: int = 2,
        keepalive_s: float = 0.1,
    ) -> None:
        self.api_key = api_key
        self.certs = dict(service_account_certs or {})  # key id -> PEM certificate
        self.voices = voices
        self.piece_s = piece_s
        self.pace_s = pace_s
        self.stall_after = stall_after
        self.keepalive_s = keepalive_s  # between the audio-less responses of a KEEPALIVE fault
        self.calls: list[Call] = []
        self.faults: deque[Any] = deque()
        self.first_byte_at: list[float] = []
        self.finished_at: list[float] = []
        self.first_byte_delay = 0.0  # seconds of "thinking" before the first audio (the benchmark's knob)
        self.stalled = threading.Event()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handlers = {
            "ListVoices": grpc.unary_unary_rpc_method_handler(
                self._list_voices,
                request_deserializer=cloud_tts.ListVoicesRequest.deserialize,
                response_serializer=cloud_tts.ListVoicesResponse.serialize,
            ),
            "SynthesizeSpeech": grpc.unary_unary_rpc_method_handler(
                self._synthesize,
                request_deserializer=cloud_tts.SynthesizeSpeechRequest.deserialize,
                response_serializer=cloud_tts.SynthesizeSpeechResponse.serialize,
            ),
            "StreamingSynthesize": grpc.stream_stream_rpc_method_handler(
                self._streaming,
                request_deserializer=cloud_tts.StreamingSynthesizeRequest.deserialize,
                response_serializer=cloud_tts.StreamingSynthesizeResponse.serialize,
            ),
        }
        generic = grpc.method_handlers_generic_handler(SERVICE, handlers)
        self._server.add_generic_rpc_handlers((generic,))
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "GoogleTtsServer":
        self._server.start()
        return self

    def stop(self) -> None:
        self.stalled.set()
        self._server.stop(grace=None)

    def __enter__(self) -> "GoogleTtsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the RPCs ---------------------------------------------------------------------------

    def _list_voices(self, request: cloud_tts.ListVoicesRequest, context: grpc.ServicerContext) -> Any:
        self._admit("ListVoices", context, (request,))
        voices = [
            cloud_tts.Voice(name=name, language_codes=[locale], natural_sample_rate_hertz=24000)
            for name, locale in self.voices
            if not request.language_code or locale.lower().startswith(request.language_code.lower())
        ]
        return cloud_tts.ListVoicesResponse(voices=voices)

    def _synthesize(self, request: cloud_tts.SynthesizeSpeechRequest, context: grpc.ServicerContext) -> Any:
        fault = self._admit("SynthesizeSpeech", context, (request,))
        rate = self._check(request.voice, request.audio_config.audio_encoding,
                           request.audio_config.sample_rate_hertz, cloud_tts.AudioEncoding.LINEAR16, context)  # fmt: skip
        if fault == STALL:
            self.stalled.wait(60)
            context.abort(grpc.StatusCode.CANCELLED, "stalled")
        audio, _ = speech_like(request.input.text, rate)
        if fault == BAD_AUDIO:
            return cloud_tts.SynthesizeSpeechResponse(audio_content=b"this is not a wav file" * 20)
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes(audio.astype("<i2").tobytes())
        if self.first_byte_delay:
            time.sleep(self.first_byte_delay)
        self.first_byte_at.append(time.monotonic())
        self.finished_at.append(time.monotonic())
        return cloud_tts.SynthesizeSpeechResponse(audio_content=buffer.getvalue())

    def _streaming(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        received = list(requests)  # the client sends the config and all text, then half-closes
        fault = self._admit("StreamingSynthesize", context, tuple(received))
        if not received or "streaming_config" not in received[0]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first request must carry streaming_config")
        config = received[0].streaming_config
        rate = self._check(config.voice, config.streaming_audio_config.audio_encoding,
                           config.streaming_audio_config.sample_rate_hertz, cloud_tts.AudioEncoding.PCM, context)  # fmt: skip
        if "Chirp3-HD" not in config.voice.name:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"voice {config.voice.name} does not support streaming")
        text = " ".join(r.input.text for r in received[1:])
        audio, _ = speech_like(text, rate)
        pcm = audio.astype("<i2").tobytes()
        if fault == BAD_AUDIO:
            pcm = pcm[:-1]
        step = 2 * max(1, int(self.piece_s * rate))
        for index, begin in enumerate(range(0, len(pcm), step)):
            if fault == STALL and index >= self.stall_after:
                self.stalled.wait(60)
                return
            if fault == KEEPALIVE and index >= self.stall_after:
                while context.is_active() and not self.stalled.wait(self.keepalive_s):
                    yield cloud_tts.StreamingSynthesizeResponse(audio_content=b"")
                return
            if index == 0:
                if self.first_byte_delay:
                    time.sleep(self.first_byte_delay)
                self.first_byte_at.append(time.monotonic())
            yield cloud_tts.StreamingSynthesizeResponse(audio_content=pcm[begin : begin + step])
            if self.pace_s:
                time.sleep(self.pace_s)
        self.finished_at.append(time.monotonic())

    # -- checks -----------------------------------------------------------------------------

    def _admit(self, method: str, context: grpc.ServicerContext, requests: tuple[Any, ...]) -> Any:
        """Record the call, check its credentials, apply a queued fault; returns a stream fault."""
        metadata = {key: str(value) for key, value in context.invocation_metadata()}
        self.calls.append(Call(method, metadata, requests))
        fault = self.faults.popleft() if self.faults else None
        if isinstance(fault, GrpcFault):
            details = []
            if fault.retry_after_s is not None:
                seconds = int(fault.retry_after_s)
                nanos = int((fault.retry_after_s - seconds) * 1e9)
                info = error_details_pb2.RetryInfo(
                    retry_delay=duration_pb2.Duration(seconds=seconds, nanos=nanos)
                )
                packed = any_pb2.Any()
                packed.Pack(info)
                details.append(packed)
            status = status_pb2.Status(code=fault.code.value[0], message=fault.message, details=details)
            context.abort_with_status(rpc_status.to_status(status))
        if not self._authorised(metadata):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "Request had invalid authentication credentials.")
        return fault

    def _authorised(self, metadata: dict[str, str]) -> bool:
        if self.api_key and metadata.get("x-goog-api-key") == self.api_key:
            return True
        bearer = metadata.get("authorization", "")
        if not bearer.startswith("Bearer ") or not self.certs:
            return False
        try:
            jwt.decode(bearer[len("Bearer ") :], certs=self.certs, verify=True)
        except (ValueError, auth_exceptions.GoogleAuthError):  # bad signature, expired, malformed
            return False
        return True

    def _check(self, voice: Any, encoding: Any, rate: int, wanted: Any, context: grpc.ServicerContext) -> int:
        known = {name for name, _ in self.voices}
        if voice.name not in known:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Voice '{voice.name}' does not exist.")
        if encoding != wanted:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported audio encoding {encoding!r}")
        return rate or 24000


def bearer_claims(call: Call) -> dict[str, Any]:
    """The claims of the JWT a call was authorised with (unverified: for test assertions)."""
    token = call.metadata["authorization"][len("Bearer ") :]
    return dict(jwt.decode(token, verify=False))

