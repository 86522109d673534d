"""Google Cloud Text-to-Speech voices through the official client (google-cloud-texttospeech).

The client talks gRPC, which can stream: Chirp 3 HD voices use `streaming_synthesize` (the text
goes up sentence by sentence, raw PCM comes back in pieces as it is made); other voices use
`synthesize_speech` once per sentence, so the first sentence is on air while the rest are made.
Audio is asked for at exactly the stream rate (Google renders any rate), 16-bit mono: "PCM" when
streaming, LINEAR16 otherwise, whose answer is a WAV file: its header is checked and stripped.
Google gives no timings, so the audio envelope drives the mouth.

- Credentials: an API key (sent as `x-goog-api-key`) or a service-account file
  (GOOGLE_APPLICATION_CREDENTIALS), from which the client signs its own short-lived JWT bearer
  tokens (no token server round trip). One of the two is required.
- Endpoint: `base_url` `https://host[:port]` (TLS) or `http://127.0.0.1:port` (plain text, allowed
  only to this machine: gRPC refuses to send credentials in clear to anyone else).
- Faults: the client's errors carry the gRPC status; UNAUTHENTICATED/PERMISSION_DENIED are
  AuthRejected, RESOURCE_EXHAUSTED is Throttled (with google.rpc.RetryInfo's delay when sent),
  UNAVAILABLE/INTERNAL are Unavailable, DEADLINE_EXCEEDED and a stream without audio for
  `timeout_s` (quiet, or sending only responses without audio: vendor_voice.StallWatch) are
  Stalled, INVALID_ARGUMENT/NOT_FOUND are permanent (InvalidSpeechRequest). The client is built
  with no retries of its own: speech/resilient.py decides.
"""

from __future__ import annotations

import functools
import io
import ipaddress
import queue
import re
import threading
import wave
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import grpc
from google.api_core import exceptions as api_exceptions
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth_exceptions
from google.cloud import texttospeech_v1 as tts
from google.cloud.texttospeech_v1.services.text_to_speech.transports import TextToSpeechGrpcTransport
from google.oauth2 import service_account
from google.rpc import error_details_pb2

from poc.speech.base import (
    AuthRejected,
    BadVendorAudio,
    InvalidSpeechRequest,
    SpeechChunk,
    SpeechError,
    Stalled,
    Throttled,
    Unavailable,
    VoiceInfo,
)
from poc.speech.sentences import language_matches, split_sentences
from poc.speech.stream_resample import PcmChunker
from poc.speech.vendor_voice import StallWatch, VendorVoice

VENDOR = "google"
DEFAULT_VOICE = "en-US-Chirp3-HD-Charon"
DEFAULT_LANGUAGE = "en-US"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
STREAMING_VOICE_MARK = "Chirp3-HD"  # the voices streaming_synthesize accepts
_LOCALE = re.compile(r"^(?P<locale>[a-z]{2,3}-[A-Z]{2})-")
_PERMANENT = (api_exceptions.InvalidArgument, api_exceptions.NotFound, api_exceptions.FailedPrecondition)
_UNAVAILABLE = (
    api_exceptions.ServiceUnavailable,
    api_exceptions.InternalServerError,
    api_exceptions.Cancelled,
)


class GoogleProvider(VendorVoice):
    """SpeechProvider for Google Cloud Text-to-Speech."""

    name = VENDOR
    vendor = VENDOR

    def __init__(
        self,
        sample_rate: int,
        api_key: str | None = None,
        voice: str | None = None,
        *,
        credentials_file: str | None = None,
        base_url: str | None = None,
        model: str | None = None,
        language: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        """Raises ValueError (a configuration error, one line) for no credentials, an unreadable
        service-account file, or a base_url that is not usable. With both a key and a file, the
        key is used."""
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if not api_key and not credentials_file:
            raise ValueError(
                "google needs TTS_API_KEY or GOOGLE_APPLICATION_CREDENTIALS (a service-account file)"
            )
        self.sample_rate = sample_rate
        self._key = api_key or ""
        self._default = voice or DEFAULT_VOICE
        self._model = model or ""
        self._language = language or DEFAULT_LANGUAGE
        self._timeout_s = timeout_s
        credentials = None if api_key else _service_account(credentials_file or "")
        options = ClientOptions(api_key=api_key or None)
        transport: Any = "grpc"
        if base_url:
            endpoint, plain = _endpoint(base_url)
            options.api_endpoint = endpoint
            if plain:
                # Local channel credentials: plain text, yet gRPC still attaches the key or
                # bearer token (it does so only over TLS or to this machine).
                transport = functools.partial(
                    TextToSpeechGrpcTransport, ssl_channel_credentials=grpc.local_channel_credentials()
                )
        self._client = tts.TextToSpeechClient(
            credentials=credentials, client_options=options, transport=transport
        )

    def warm_up(self) -> None:
        """Nothing to load: a vendor's voice."""

    def list_voices(self) -> list[VoiceInfo]:
        """The service's voices (ListVoices); a voice with several languages is listed under its first."""
        try:
            answer = self._client.list_voices(request=tts.ListVoicesRequest(), timeout=self._timeout_s)
        except api_exceptions.GoogleAPICallError as error:
            raise self._fault(error) from None
        return [
            VoiceInfo(v.name, v.name, v.language_codes[0] if v.language_codes else "")
            for v in answer.voices
        ]

    def _resolve(self, voice: str | None, language: str | None) -> tts.VoiceSelectionParams:
        name = voice or self._default
        match = _LOCALE.match(name)
        locale = match.group("locale") if match else (language or self._language)
        if language and match and not language_matches(language, locale):
            raise InvalidSpeechRequest(
                f"language {language!r} is not spoken by google voice {name!r} ({locale})"
            )
        return tts.VoiceSelectionParams(name=name, language_code=locale, model_name=self._model)

    def _stream(
        self, text: str, selection: tts.VoiceSelectionParams, language: str | None
    ) -> Iterator[SpeechChunk]:
        sentences = split_sentences(text)  # VendorVoice.synthesize_stream checked them speakable
        if STREAMING_VOICE_MARK in selection.name:
            return self._streamed(selection, sentences)
        return self._per_sentence(selection, sentences)

    def _per_sentence(
        self, selection: tts.VoiceSelectionParams, sentences: Sequence[str]
    ) -> Iterator[SpeechChunk]:
        config = tts.AudioConfig(
            audio_encoding=tts.AudioEncoding.LINEAR16, sample_rate_hertz=self.sample_rate
        )
        for sentence in sentences:
            try:
                answer = self._client.synthesize_speech(
                    input=tts.SynthesisInput(text=sentence), voice=selection, audio_config=config,
                    timeout=self._timeout_s,
                )  # fmt: skip
            except api_exceptions.GoogleAPICallError as error:
                raise self._fault(error) from None
            chunker = PcmChunker(VENDOR, self.sample_rate, self.sample_rate, min_chunk_s=0.0)
            chunk = chunker.feed(self._wav_pcm(answer.audio_content))
            tail = chunker.finish()
            for piece in (chunk, tail):
                if piece is not None and len(piece.audio):
                    yield piece

    def _streamed(
        self, selection: tts.VoiceSelectionParams, sentences: Sequence[str]
    ) -> Iterator[SpeechChunk]:
        config = tts.StreamingSynthesizeConfig(
            voice=selection,
            streaming_audio_config=tts.StreamingAudioConfig(
                audio_encoding=tts.AudioEncoding.PCM, sample_rate_hertz=self.sample_rate
            ),
        )
        requests = [tts.StreamingSynthesizeRequest(streaming_config=config)]
        requests += [
            tts.StreamingSynthesizeRequest(input=tts.StreamingSynthesisInput(text=s)) for s in sentences
        ]
        try:
            responses = self._client.streaming_synthesize(requests=iter(requests))
        except api_exceptions.GoogleAPICallError as error:
            raise self._fault(error) from None
        # The response iterator blocks with no timeout of its own; a reader thread hands pieces
        # over so a quiet stream can be noticed (and cancelled) after timeout_s.
        pieces: queue.Queue[tuple[str, Any]] = queue.Queue()
        threading.Thread(target=_read, args=(responses, pieces), name="google-tts", daemon=True).start()
        chunker = PcmChunker(VENDOR, self.sample_rate, self.sample_rate)
        watch = StallWatch(VENDOR, self._timeout_s)
        finished = False
        try:
            while True:
                kind, value = watch.take(pieces)
                if kind == "audio" and not value:
                    watch.check()  # a response without audio does not keep a stream alive
                elif kind == "audio":
                    watch.heard_audio()
                    chunk = chunker.feed(value)
                    if chunk is not None:
                        yield chunk
                elif kind == "done":
                    finished = True
                    tail = chunker.finish()
                    if tail is not None:
                        yield tail
                    return
                else:
                    raise self._fault(value) from None
        finally:
            if not finished:
                responses.cancel()  # a stall or an abandoned utterance: free the stream

    def _wav_pcm(self, data: bytes) -> bytes:
        """The samples of a LINEAR16 answer (a WAV file), checked to be what was asked for."""
        try:
            with wave.open(io.BytesIO(data), "rb") as wav:
                shape = (wav.getnchannels(), wav.getsampwidth(), wav.getframerate())
                frames = wav.readframes(wav.getnframes())
        except (wave.Error, EOFError) as error:
            raise BadVendorAudio(
                f"{VENDOR} sent LINEAR16 audio that is not a WAV file ({error})"
            ) from None
        if shape != (1, 2, self.sample_rate):
            raise BadVendorAudio(
                f"{VENDOR} sent {shape[0]}-channel {8 * shape[1]}-bit audio at {shape[2]} Hz; "
                f"asked for mono 16-bit at {self.sample_rate} Hz"
            )
        return frames

    def _fault(self, error: BaseException) -> Exception:
        """The contract error for a client error (never quoting the key)."""
        said = " ".join(str(getattr(error, "message", "") or error).split())[:200]
        if self._key:
            said = said.replace(self._key, "***")
        status = _status_name(error)
        if isinstance(error, (api_exceptions.Unauthenticated, api_exceptions.PermissionDenied)):
            return AuthRejected(f"{VENDOR} rejected the credentials ({status})")
        if isinstance(error, api_exceptions.ResourceExhausted):
            return Throttled(f"{VENDOR} is throttling requests ({status}): {said}", _retry_delay(error))
        if isinstance(error, api_exceptions.DeadlineExceeded):
            return Stalled(f"{VENDOR} did not answer within {self._timeout_s:g} s ({status})")
        if isinstance(error, _PERMANENT):
            return InvalidSpeechRequest(f"{VENDOR} refused the request ({status}): {said}")
        if isinstance(error, _UNAVAILABLE):
            return Unavailable(f"{VENDOR} cannot be reached or failed ({status}): {said}")
        if isinstance(error, auth_exceptions.GoogleAuthError):
            name = type(error).__name__
            return AuthRejected(f"{VENDOR} could not sign in with the service account ({name})")
        return SpeechError(f"{VENDOR} failed ({status}): {said}")


def _read(responses: Any, pieces: "queue.Queue[tuple[str, Any]]") -> None:
    try:
        for response in responses:
            pieces.put(("audio", response.audio_content))
        pieces.put(("done", None))
    except (api_exceptions.GoogleAPICallError, auth_exceptions.GoogleAuthError) as error:
        pieces.put(("error", error))
    except grpc.RpcError as error:  # cancelled by us after a stall: nobody is listening
        pieces.put(("error", api_exceptions.from_grpc_error(error)))


def _status_name(error: BaseException) -> str:
    code = getattr(error, "grpc_status_code", None)
    return code.name if code is not None else type(error).__name__


def _retry_delay(error: api_exceptions.GoogleAPICallError) -> float | None:
    """Seconds from a google.rpc.RetryInfo detail, if the service sent one."""
    for detail in error.details or ():
        if isinstance(detail, error_details_pb2.RetryInfo):
            return max(0.0, detail.retry_delay.seconds + detail.retry_delay.nanos / 1e9)
    return None


def _service_account(path: str) -> service_account.Credentials:
    try:
        return service_account.Credentials.from_service_account_file(path, scopes=SCOPES)
    except (OSError, ValueError, KeyError, auth_exceptions.GoogleAuthError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else type(error).__name__
        raise ValueError(
            f"GOOGLE_APPLICATION_CREDENTIALS {path!r} is not a readable service-account file ({reason})"
        ) from None


def _endpoint(base_url: str) -> tuple[str, bool]:
    """(host:port for the client, whether the channel is plain text) for a base URL."""
    parts = urlsplit(base_url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"TTS_API_BASE_URL for google must be an http:// or https:// URL, got {base_url!r}"
        )
    port = parts.port or (443 if scheme == "https" else 80)
    host = parts.hostname
    if scheme == "http" and not _is_local(host):
        raise ValueError(
            "TTS_API_BASE_URL for google may be plain http:// only for this machine; "
            f"use https:// for {host}"
        )
    return f"{host}:{port}", scheme == "http"


def _is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
