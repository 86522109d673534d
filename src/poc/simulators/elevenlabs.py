"""A local ElevenLabs: the text-to-speech endpoints poc uses, as the API reference describes them.

- `POST /v1/text-to-speech/{voice_id}/stream/with-timestamps?output_format=pcm_44100`, JSON body
  with `text` (required), `model_id`, `language_code`: streams newline-delimited JSON objects,
  each `{"audio_base64": ..., "alignment": {"characters", "character_start_times_seconds",
  "character_end_times_seconds"}, "normalized_alignment": ...}`; times count from the start of
  the utterance; audio is raw little-endian 16-bit mono PCM at the format's rate.
- `GET /v1/voices`: `{"voices": [{"voice_id", "name", "category", "labels",
  "verified_languages"}]}`.

Every request must carry the key in `xi-api-key`, else 401 with the documented error body
(`{"detail": {"status": "invalid_api_key", ...}}`). An unknown voice is a 404
(`voice_not_found`), a missing text a 422, an unknown output format a 400.
"""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from poc.simulators.base import Request
from poc.simulators.voice import VoiceServer, speak

PCM_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
DEFAULT_FORMAT = "mp3_44100_128"

VOICES = [
    {
        "voice_id": "21m00Tcm4TlvDq8ikWAM",
        "name": "Rachel",
        "category": "premade",
        "labels": {"accent": "american", "gender": "female"},
        "verified_languages": [{"language": "en", "model_id": "eleven_multilingual_v2", "locale": "en-US"}],
    },
    {
        "voice_id": "JBFqnCBsd6RMkjVDRZzb",
        "name": "George",
        "category": "premade",
        "labels": {"accent": "british", "gender": "male"},
        "verified_languages": [{"language": "en", "model_id": "eleven_multilingual_v2", "locale": "en-GB"}],
    },
    {
        "voice_id": "XrExE9yKIg1WjnnlVkGX",
        "name": "Matilda",
        "category": "premade",
        "labels": {"accent": "american", "gender": "female"},
        "verified_languages": [],
    },
]


def _error(request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
    request.send_json(status, {"detail": {"status": code, "message": message}}, headers)


class ElevenLabsServer(VoiceServer):
    """ElevenLabs' TTS API on 127.0.0.1 (see the module docstring for what it checks).

    `relative_alignment`: time each piece's characters from the piece's own start, as the
    WebSocket API does, instead of from the utterance's start.
    """

    keepalives = {
        "keepalive": b'{"audio_base64": "", "alignment": null, "normalized_alignment": null}\n',
        "ping": b"\n",  # a blank line: the SDK skips it
    }

    def __init__(self, api_key: str = "test-key") -> None:
        super().__init__(api_key)
        self.relative_alignment = False

    def _authorised(self, request: Request, fault: object) -> bool:
        if fault == "401" or request.headers.get("xi-api-key") != self.api_key:
            _error(request, 401, "invalid_api_key", "Invalid API key")
            return False
        if fault == "429":
            _error(
                request, 429, "too_many_concurrent_requests",
                "Too many concurrent requests for your subscription.",
                {"Retry-After": self.retry_after},
            )  # fmt: skip
            return False
        if fault == "500":
            _error(request, 500, "internal_error", "Something went wrong on our side.")
            return False
        return True

    def with_timestamps(self, request: Request, match: re.Match[str]) -> None:
        fault = self.next_fault()
        if not self._authorised(request, fault):
            return
        voice_id = match.group("voice")
        if voice_id not in {v["voice_id"] for v in VOICES}:
            _error(request, 404, "voice_not_found", f"A voice with the voice_id {voice_id} was not found.")
            return
        try:
            body = request.json()
        except ValueError:
            _error(request, 400, "invalid_json", "The request body is not JSON.")
            return
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text:
            request.send_json(
                422, {"detail": [{"loc": ["body", "text"], "msg": "Field required", "type": "missing"}]}
            )
            return
        output_format = _query(request.recorded.path).get("output_format", DEFAULT_FORMAT)
        if not output_format.startswith("pcm_") or int(output_format[4:] or 0) not in PCM_RATES:
            # MP3 is documented too, but poc asks for PCM; anything else is refused as the API does.
            _error(request, 400, "invalid_output_format", f"Unsupported output format {output_format}.")
            return
        rate = int(output_format[4:])
        utterance = speak(text, rate)
        lines = []
        sent = 0
        for piece in self.pieces(utterance.audio, rate):
            start_s, end_s = sent / rate, (sent + len(piece)) / rate
            sent += len(piece)
            chars = [c for c in utterance.chars if start_s <= c.start_s < end_s]
            shift = start_s if self.relative_alignment else 0.0
            alignment = {
                "characters": [c.char for c in chars],
                "character_start_times_seconds": [round(c.start_s - shift, 4) for c in chars],
                "character_end_times_seconds": [round(c.end_s - shift, 4) for c in chars],
            }
            audio = base64.b64encode(piece.astype("<i2").tobytes()).decode()
            if fault == "garbage":
                audio = "this is not base64 audio!"
            line = {"audio_base64": audio, "alignment": alignment, "normalized_alignment": alignment}
            lines.append(json.dumps(line).encode() + b"\n")
        self.stream(request, lines, "application/json", fault)

    def voices(self, request: Request, match: re.Match[str]) -> None:
        if not self._authorised(request, self.next_fault()):
            return
        request.send_json(200, {"voices": VOICES, "has_more": False})

    routes = [
        ("POST", r"/v1/text-to-speech/(?P<voice>[^/]+)/stream/with-timestamps", with_timestamps),
        ("GET", r"/v1/voices", voices),
    ]

    def sent_audio(self, text: str, rate: int) -> np.ndarray:
        """The samples this server streams for `text` at `rate` (what a client must receive)."""
        return speak(text, rate).audio


def _query(path: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(path).query))
