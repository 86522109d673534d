"""ElevenLabs voices through the official `elevenlabs` SDK, streamed with character timings.

One request per sentence to `POST /v1/text-to-speech/{voice_id}/stream/with-timestamps`: the
answer is a stream of JSON objects, each a piece of base64 PCM and the characters spoken in it
with their times. Audio is asked for as raw PCM at the supported rate nearest the stream's
(`pcm_44100` for a 44.1 kHz stream: no resampling at all), so nothing is decoded but base64, and
each piece goes on as soon as it arrives. The character times drive the mouth (speech/timings.py).

The SDK is pointed at `base_url` (TTS_API_BASE_URL, e.g. https://api.elevenlabs.io or a local
simulator); its own retries are switched off because speech/resilient.py retries with the
stream's rules, and its timeout is the stall timeout: `timeout_s` without audio raises Stalled,
whether nothing came or only objects without audio and blank lines (vendor_voice.StallWatch).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from elevenlabs.client import ElevenLabs
from elevenlabs.core.api_error import ApiError

from poc.speech.base import BadVendorAudio, InvalidSpeechRequest, SpeechChunk, VoiceInfo
from poc.speech.stream_resample import PcmChunker
from poc.speech.timings import character_marks
from poc.speech.vendor_errors import TRANSPORT_ERRORS
from poc.speech.vendor_voice import ApiVoice, StallWatch, watched_http_client

VENDOR = "ElevenLabs"
DEFAULT_VOICE = "21m00Tcm4TlvDq8ikWAM"  # "Rachel", a premade voice every account has
DEFAULT_MODEL = "eleven_flash_v2_5"  # the low-latency model that also honours language_code
PCM_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)  # the documented pcm_* formats
_VOICE_ID = re.compile(r"[A-Za-z0-9]{16,32}")  # ElevenLabs ids are 20 letters and digits
_NO_RETRIES = {"max_retries": 0}
RELATIVE_SLACK_S = 0.05  # alignment this far before audio already heard counts from the piece


class ElevenLabsProvider(ApiVoice):
    """SpeechProvider for ElevenLabs (see the module docstring)."""

    name = "elevenlabs"
    vendor = VENDOR
    default_voice = DEFAULT_VOICE
    default_model = DEFAULT_MODEL
    pcm_rates = PCM_RATES

    def _connect(self, api_key: str, base_url: str | None) -> ElevenLabs:
        return ElevenLabs(
            api_key=api_key,
            base_url=base_url or None,
            timeout=self.timeout_s,
            httpx_client=watched_http_client(self.timeout_s),
        )

    def list_voices(self) -> list[VoiceInfo]:
        try:
            answer = self._client.voices.get_all(request_options=_NO_RETRIES)
        except ApiError as error:
            raise self._status_error(error) from None
        except TRANSPORT_ERRORS as error:
            raise self._transport_fault(error) from None
        voices = []
        for voice in answer.voices:
            languages = voice.verified_languages or []
            language = (languages[0].locale or languages[0].language) if languages else ""
            name = voice.name or voice.voice_id
            voices.append(VoiceInfo(id=voice.voice_id, name=name, language=language or ""))
        return voices

    # -- the stream -------------------------------------------------------------------------

    def _stream(self, text: str, voice_id: str, language: str | None) -> Iterator[SpeechChunk]:
        chunker = PcmChunker(VENDOR, self.vendor_rate, self.sample_rate)
        timing = _AlignmentClock()
        code = language.replace("_", "-").split("-")[0].lower() if language else None
        extra = {"language_code": code} if code else {}
        watch = StallWatch(VENDOR, self.timeout_s)
        try:
            # A stream given up on closes its connection at once, when `hang_up` ends.
            with contextlib.ExitStack() as hang_up:
                with watch.asking():  # the raw form makes its request as it is entered
                    answer = hang_up.enter_context(
                        self._client.text_to_speech.with_raw_response.stream_with_timestamps(
                            voice_id,
                            text=text,
                            model_id=self.model,
                            output_format=f"pcm_{self.vendor_rate}",
                            request_options=_NO_RETRIES,
                            **extra,
                        )
                    )
                for piece in answer.data:
                    pcm = self._base64_audio(getattr(piece, "audio_base_64", None))
                    if pcm:
                        watch.heard_audio()
                    alignment = getattr(piece, "alignment", None)
                    if alignment is not None and alignment.characters:
                        starts = alignment.character_start_times_seconds
                        offset = timing.offset(starts, alignment.character_end_times_seconds)
                        rate = self.sample_rate
                        chunker.add_marks(character_marks(alignment.characters, starts, rate, offset))
                    timing.heard(len(pcm) / 2 / self.vendor_rate)
                    chunk = chunker.feed(pcm)
                    if chunk is not None:
                        yield chunk
        except ApiError as error:
            raise self._status_error(error) from None
        except TRANSPORT_ERRORS as error:
            raise self._transport_fault(error) from None
        except ValueError as error:  # alignment lists that disagree
            raise BadVendorAudio(f"{VENDOR} sent timings that do not add up: {error}") from None
        yield from self._last_chunks(chunker, timing.received_s)

    def _status_error(self, error: ApiError) -> Exception:
        return self._status_fault(error.status_code or 0, error.headers, error.body)

    def _voice_param(self, voice: str) -> str:
        if not _VOICE_ID.fullmatch(voice):
            raise InvalidSpeechRequest(
                f"{voice!r} is not an ElevenLabs voice id (20 letters and digits, e.g. "
                f"{DEFAULT_VOICE}; list them with `python -m poc voices --provider elevenlabs`)"
            )
        return voice


class _AlignmentClock:
    """Where a piece's character times count from.

    The HTTP stream times characters from the start of the utterance. If a piece's times
    restart near zero, they count from the piece itself (as the WebSocket API's do) and are
    shifted by the audio heard before it.
    """

    def __init__(self) -> None:
        self.received_s = 0.0  # vendor audio so far
        self._aligned_until_s = 0.0  # the latest character end time seen

    def offset(self, starts: list[float], ends: list[float]) -> float:
        restarted = self.received_s > 0 and starts[0] + RELATIVE_SLACK_S < self._aligned_until_s
        offset = self.received_s if restarted else 0.0
        last = ends[-1] if ends else starts[-1]
        self._aligned_until_s = max(self._aligned_until_s, last + offset)
        return offset

    def heard(self, seconds: float) -> None:
        self.received_s += seconds
