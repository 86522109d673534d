"""Azure AI Speech voices through Microsoft's official Speech SDK (azure-cognitiveservices-speech).

The SDK speaks the service's WebSocket protocol natively and streams: each `synthesizing` event
carries the next piece of raw PCM, and `viseme_received` events say which mouth shape (one of
22 viseme ids) starts at which audio offset (100-ns ticks). Those pieces are turned into chunks
as they arrive, so the first words go on air while the service is still speaking.

- Format: raw 16-bit mono PCM at the stream rate when the service offers it (8, 16, 22.05, 24,
  44.1, 48 kHz), else the nearest offered rate, resampled as it streams (speech/stream_resample).
- Endpoint: `base_url` (`ws://`/`wss://`, or `http(s)://` which means the same host) is handed to
  the SDK as its `host`, the way Microsoft's on-prem containers are used; without it the SDK
  derives the public endpoint from `region`.
- Visemes become phoneme marks with one representative IPA symbol per viseme id, symbols that
  face/visemes.py turns into mouth poses.
- Faults: the SDK reports failures as a cancelled result (an error code, and for refused
  WebSocket upgrades the HTTP status in its text); they are mapped here onto the speech
  contract. The SDK does not expose the 429's Retry-After header, so Throttled carries none.
  The SDK's own frame timeout is set to `timeout_s`; a watchdog at `timeout_s` plus a margin
  backs it up, so a silent service always ends in `Stalled`. A service that sends viseme
  metadata but no audio for `timeout_s` is stalled too (vendor_voice.StallWatch).

Each utterance gets its own SpeechSynthesizer (and connection): callbacks then cannot mix two
requests made from different worker threads, and a stalled request is simply abandoned.
"""

from __future__ import annotations

import queue
import re
import threading
from collections import deque
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape, quoteattr

import azure.cognitiveservices.speech as speechsdk

from poc.speech.base import (
    InvalidSpeechRequest,
    SpeechChunk,
    SpeechError,
    Stalled,
    Throttled,
    Unavailable,
    VoiceInfo,
)
from poc.speech.faults import fault_for_status
from poc.speech.sentences import language_matches
from poc.speech.stream_resample import PcmChunker
from poc.speech.vendor_voice import StallWatch, VendorVoice

VENDOR = "azure"
DEFAULT_VOICE = "en-US-AriaNeural"
TICKS_PER_SECOND = 10_000_000
WATCHDOG_MARGIN_S = 1.0
# How long a piece of audio waits for a viseme event raised a moment behind it (see _stream).
VISEME_GRACE_S = 0.004  # the SDK's own frame timeout fires first; this only backs it up

_FORMATS = {
    8000: speechsdk.SpeechSynthesisOutputFormat.Raw8Khz16BitMonoPcm,
    16000: speechsdk.SpeechSynthesisOutputFormat.Raw16Khz16BitMonoPcm,
    22050: speechsdk.SpeechSynthesisOutputFormat.Raw22050Hz16BitMonoPcm,
    24000: speechsdk.SpeechSynthesisOutputFormat.Raw24Khz16BitMonoPcm,
    44100: speechsdk.SpeechSynthesisOutputFormat.Raw44100Hz16BitMonoPcm,
    48000: speechsdk.SpeechSynthesisOutputFormat.Raw48Khz16BitMonoPcm,
}

# Azure's 22 visemes (en-US set, "How to get facial position with viseme") -> one IPA symbol of
# each group that face/visemes.py knows; 0 is silence, which lets the audio close the mouth.
VISEME_PHONEMES: dict[int, str] = {
    0: "_",
    1: "ʌ",  # æ ə ʌ
    2: "ɑ",
    3: "ɔ",
    4: "ɛ",  # ɛ ʊ
    5: "ɝ",
    6: "i",  # j i ɪ
    7: "u",  # w u
    8: "o",
    9: "aʊ",
    10: "ɔɪ",
    11: "aɪ",
    12: "h",
    13: "ɹ",
    14: "l",
    15: "s",  # s z
    16: "ʃ",  # ʃ tʃ dʒ ʒ
    17: "ð",
    18: "f",  # f v
    19: "t",  # d t n θ
    20: "k",  # k g ŋ
    21: "m",  # p b m
}

# 'en-US-AriaNeural', 'sr-Latn-RS-NicholasNeural', 'en-US-Ava:DragonHDLatestNeural'.
_VOICE = re.compile(r"^(?P<locale>[a-z]{2,3}(?:-[A-Z][a-z]{3})?-[A-Z]{2})-\S+$")
_HTTP_STATUS = re.compile(r"\((\d{3})\)")


class AzureProvider(VendorVoice):
    """SpeechProvider for Azure AI Speech (neural voices, streamed PCM, viseme mouth marks)."""

    name = VENDOR
    vendor = VENDOR

    def __init__(
        self,
        sample_rate: int,
        api_key: str,
        voice: str | None = None,
        *,
        region: str | None = None,
        base_url: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        """Raises ValueError (a configuration error) for a missing key, no region and no
        base_url, a base_url that is not a ws/wss/http/https URL, or a malformed voice name."""
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if not api_key:
            raise ValueError("azure needs an API key (TTS_API_KEY)")
        if not base_url and not region:
            raise ValueError("azure needs AZURE_SPEECH_REGION (or TTS_API_BASE_URL)")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.sample_rate = sample_rate
        self._key = api_key
        self._region = region
        self._host = _sdk_host(base_url) if base_url else None
        self._timeout_s = timeout_s
        self._default = voice or DEFAULT_VOICE
        try:
            voice_locale(self._default)
        except InvalidSpeechRequest as error:
            raise ValueError(str(error)) from None
        # The offered rate nearest the stream's (ties go to the higher one).
        self.vendor_rate = min(_FORMATS, key=lambda rate: (abs(rate - sample_rate), -rate))

    def warm_up(self) -> None:
        """Nothing to load: a vendor's voice."""

    def list_voices(self) -> list[VoiceInfo]:
        """The service's voices (GET /cognitiveservices/voices/list through the SDK)."""
        synthesizer = speechsdk.SpeechSynthesizer(speech_config=self._config(), audio_config=None)
        result = synthesizer.get_voices_async("").get()
        if result.reason != speechsdk.ResultReason.VoicesListRetrieved:
            raise self._fault(None, result.error_details or "")
        return [
            VoiceInfo(v.short_name, v.local_name or v.short_name, v.locale) for v in result.voices
        ]

    def _resolve(self, voice: str | None, language: str | None) -> str:
        name = voice or self._default
        locale = voice_locale(name)
        if language and "Multilingual" not in name and not language_matches(language, locale):
            raise InvalidSpeechRequest(
                f"language {language!r} is not spoken by azure voice {name!r} ({locale})"
            )
        return name

    def _config(self) -> speechsdk.SpeechConfig:
        if self._host:
            config = speechsdk.SpeechConfig(host=self._host, subscription=self._key)
        else:
            config = speechsdk.SpeechConfig(subscription=self._key, region=self._region)
        config.set_speech_synthesis_output_format(_FORMATS[self.vendor_rate])
        # A service that goes quiet mid-utterance ends the request after timeout_s.
        config.set_property(
            speechsdk.PropertyId.SpeechSynthesis_FrameTimeoutInterval, str(int(self._timeout_s * 1000))
        )
        # Raise viseme events as they arrive rather than paced to audio playback: there is no
        # playback here, and the marks must be in hand when their audio is.
        config.set_property(
            speechsdk.PropertyId.SpeechServiceResponse_SynthesisEventsSyncToAudio, "false"
        )
        return config

    def _stream(self, text: str, voice: str, language: str | None) -> Iterator[SpeechChunk]:
        return self._speak(ssml_for(text, voice, language))  # built now: a bad one raises here

    def _speak(self, ssml: str) -> Iterator[SpeechChunk]:
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        synthesizer = speechsdk.SpeechSynthesizer(speech_config=self._config(), audio_config=None)
        synthesizer.synthesizing.connect(lambda e: events.put(("audio", e.result.audio_data)))
        synthesizer.viseme_received.connect(
            lambda e: events.put(("viseme", (e.audio_offset, e.viseme_id)))
        )
        synthesizer.synthesis_completed.connect(lambda e: events.put(("done", None)))
        synthesizer.synthesis_canceled.connect(lambda e: events.put(("canceled", _cancellation(e))))
        chunker = PcmChunker(VENDOR, self.vendor_rate, self.sample_rate)
        backlog: deque[tuple[str, Any]] = deque()  # events taken early, in arrival order
        watch = StallWatch(VENDOR, self._timeout_s)
        finished = False
        speaking = None
        try:
            speaking = synthesizer.speak_ssml_async(ssml)
            while True:
                if backlog:
                    kind, value = backlog.popleft()
                else:
                    kind, value = watch.take(events, margin_s=WATCHDOG_MARGIN_S)
                if kind == "viseme":
                    self._mark(chunker, value)
                    watch.check()  # metadata without audio does not keep a stream alive
                elif kind == "audio":
                    watch.heard_audio()
                    # Viseme and audio events are raised on different SDK threads, so a viseme
                    # the service sent before this audio may be raised just after it: wait a
                    # few milliseconds for one, and take those already queued, so the mark
                    # travels with its audio rather than a chunk later.
                    grace = VISEME_GRACE_S
                    while True:
                        try:
                            early = events.get(timeout=grace) if grace else events.get_nowait()
                        except queue.Empty:
                            break
                        grace = 0.0
                        if early[0] == "viseme":
                            self._mark(chunker, early[1])
                        else:
                            backlog.append(early)
                    chunk = chunker.feed(bytes(value))
                    if chunk is not None:
                        yield chunk
                elif kind == "done":
                    finished = True
                    tail = chunker.finish()
                    if tail is not None:
                        yield tail
                    return
                else:
                    raise self._fault(*value)
        finally:
            _release(synthesizer, speaking, finished)

    def _mark(self, chunker: PcmChunker, viseme: tuple[int, int]) -> None:
        ticks, viseme_id = viseme
        position = round(ticks * self.sample_rate / TICKS_PER_SECOND)
        chunker.add_marks([(position, VISEME_PHONEMES.get(viseme_id, "_"))])

    def _fault(self, code: speechsdk.CancellationErrorCode | None, details: str) -> Exception:
        """The contract error for a cancelled synthesis or voices request."""
        said = _clean(details, self._key)
        status = _HTTP_STATUS.search(said) if "upgrade failed" in said or code is None else None
        if status:
            return fault_for_status(VENDOR, int(status.group(1)))
        errors = speechsdk.CancellationErrorCode
        if code == errors.AuthenticationFailure:
            return fault_for_status(VENDOR, 401)
        if code == errors.Forbidden:
            return fault_for_status(VENDOR, 403)
        if code == errors.TooManyRequests:
            return Throttled(f"{VENDOR} is throttling requests: {said}")
        if code == errors.BadRequest:
            return InvalidSpeechRequest(f"{VENDOR} refused the request: {said}")
        if code == errors.ServiceTimeout:
            return Stalled(f"{VENDOR} sent nothing for {self._timeout_s:g} s (the stream stalled)")
        if code in (errors.ConnectionFailure, errors.ServiceUnavailable, errors.ServiceError):
            return Unavailable(f"{VENDOR} cannot be reached or failed: {said}")
        return SpeechError(f"{VENDOR} failed: {said}")


def _release(
    synthesizer: speechsdk.SpeechSynthesizer, speaking: speechsdk.ResultFuture | None, finished: bool
) -> None:
    """Give back what one utterance holds. The SDK keeps a request's connection and native
    threads until its future is resolved (`get()`), even after the synthesizer is collected:
    left unresolved, every sentence leaked a WebSocket and about five threads.

    A finished utterance's result is ready, so it is resolved here. An abandoned one (a stall,
    a cancel, an error) is first stopped, so the service does not talk into a void; its futures
    are resolved on a thread of their own, because the SDK's wait has no timeout and this may
    run wherever the abandoned stream is collected (the event loop's thread included)."""
    if speaking is None:
        return
    if finished:
        speaking.get()
        return
    stopping = synthesizer.stop_speaking_async()

    def resolve() -> None:
        stopping.get()
        speaking.get()

    threading.Thread(target=resolve, name="azure-release", daemon=True).start()


def _cancellation(event: speechsdk.SpeechSynthesisEventArgs) -> tuple[Any, str]:
    """(error code, error text) of a cancelled synthesis, read while the SDK's result is alive
    (its handle is released once the callback returns)."""
    details = event.result.cancellation_details
    return details.error_code, details.error_details or ""


def voice_locale(voice: str) -> str:
    """'en-US' for 'en-US-AriaNeural'; InvalidSpeechRequest for a name that is not a voice."""
    match = _VOICE.match(voice)
    if match is None:
        raise InvalidSpeechRequest(
            f"unknown voice {voice!r} for azure; expected a name like {DEFAULT_VOICE} "
            "(list them with `python -m poc voices --provider azure`)"
        )
    return match.group("locale")


def ssml_for(text: str, voice: str, language: str | None) -> str:
    """The SSML document for `text` in `voice`; a multilingual voice asked for another
    language gets a <lang> element (other voices were checked to speak it)."""
    body = escape(text)
    if language and "Multilingual" in voice:
        body = f"<lang xml:lang={quoteattr(language)}>{body}</lang>"
    return (
        '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" '
        'xmlns:mstts="https://www.w3.org/2001/mstts" '
        f"xml:lang={quoteattr(voice_locale(voice))}>"
        f"<voice name={quoteattr(voice)}>{body}</voice></speak>"
    )


def _sdk_host(base_url: str) -> str:
    """The SDK's `host` for a base URL: ws(s)://host[:port]; http(s) means the same host."""
    parts = urlsplit(base_url.strip())
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(
            "TTS_API_BASE_URL for azure must be a ws://, wss://, http:// or https:// URL, "
            f"got {base_url!r}"
        )
    return f"{scheme}://{parts.netloc}"


def _clean(details: str, key: str) -> str:
    """The SDK's error text as one line: the part before its connection diagnostics, no key."""
    first = details.split("\n", 1)[0]
    first = first.split(" USP state:", 1)[0].strip()
    if key:
        first = first.replace(key, "***")
    return " ".join(first.split())[:200]
