"""A local Cartesia: the endpoints poc uses, as the API reference describes them.

- `POST /tts/sse`: JSON body with `model_id`, `transcript`, `voice` (an id, or an object with
  `id`), `output_format` (`{"container": "raw", "encoding": "pcm_s16le", "sample_rate": ...}`),
  optional `language` and `add_timestamps`. The answer is a `text/event-stream` of events whose
  data is JSON: `chunk` events (`data`: base64 audio), `timestamps` events (`word_timestamps`:
  `words`, `start`, `end` in seconds since the utterance began) and a final `done` event; a
  failure mid-stream is an `error` event. Word timestamps are sent right after the audio in
  which the words start (timings follow the audio, as they do from a vendor that aligns what it
  has just generated).
- `GET /voices`: a cursor page `{"data": [...], "has_more": ...}`, honouring `limit` and
  `starting_after`.

Requests need the key (`Authorization: Bearer <key>`, or `X-API-Key: <key>` which Cartesia also
accepts) and a `Cartesia-Version` header; without the key: 401, without the version: 400.
"""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import parse_qsl, urlsplit

from poc.simulators.base import Request
from poc.simulators.voice import VoiceServer, speak

RATES = (8000, 16000, 22050, 24000, 44100, 48000)
MODELS = ("sonic-3.5", "sonic-3", "sonic-latest", "sonic-2", "sonic-turbo")
VOICES = [
    {
        "id": "6ccbfb76-1fc6-48f7-b71d-91ac6298247b",
        "name": "Tessa",
        "description": "A warm, clear voice for narration.",
        "language": "en",
        "is_owner": False,
        "is_public": True,
        "created_at": "2025-01-01T00:00:00Z",
    },
    {
        "id": "a0e99841-438c-4a64-b679-ae501e7d6091",
        "name": "Barbershop Man",
        "description": "A friendly male voice.",
        "language": "en",
        "is_owner": False,
        "is_public": True,
        "created_at": "2025-01-01T00:00:00Z",
    },
    {
        "id": "b9de4a89-2257-424b-94c2-db18ba68c81a",
        "name": "Hannah",
        "description": "A calm German voice.",
        "language": "de",
        "is_owner": False,
        "is_public": True,
        "created_at": "2025-01-01T00:00:00Z",
    },
]


def _error(request: Request, status: int, title: str, message: str, headers: dict[str, str] | None = None) -> None:
    body = {"title": title, "message": message, "status_code": status, "request_id": "sim", "error_code": None}
    request.send_json(status, body, headers)


def _event(kind: str, payload: dict[str, object]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **payload})}\n\n".encode()


class CartesiaServer(VoiceServer):
    """Cartesia's TTS and voices API on 127.0.0.1 (see the module docstring)."""

    keepalives = {
        "keepalive": _event("timestamps", {
            "done": False, "status_code": 206, "word_timestamps": {"words": [], "start": [], "end": []},
        }),  # fmt: skip
        "ping": b": ping\n\n",  # an SSE comment: no event at all
    }

    def _admitted(self, request: Request, fault: object) -> bool:
        headers = request.headers
        keyed = headers.get("authorization") == f"Bearer {self.api_key}" or headers.get("x-api-key") == self.api_key
        if fault == "401" or not keyed:
            _error(request, 401, "Unauthorized", "Invalid API key.")
            return False
        if not headers.get("cartesia-version"):
            _error(request, 400, "Bad Request", "The Cartesia-Version header is required.")
            return False
        if fault == "429":
            _error(request, 429, "Too Many Requests", "Concurrency limit reached.", {"Retry-After": self.retry_after})
            return False
        if fault == "500":
            _error(request, 500, "Internal Server Error", "Something went wrong.")
            return False
        return True

    def sse(self, request: Request, match: re.Match[str]) -> None:
        fault = self.next_fault()
        if not self._admitted(request, fault):
            return
        try:
            body = request.json()
        except ValueError:
            _error(request, 400, "Bad Request", "The body is not JSON.")
            return
        problem = _invalid(body)
        if problem is not None:
            status, message = problem
            _error(request, status, "Not Found" if status == 404 else "Bad Request", message)
            return
        rate = body["output_format"]["sample_rate"]
        utterance = speak(body["transcript"], rate)
        words = list(utterance.words)
        events: list[bytes] = []
        sent = 0
        for piece in self.pieces(utterance.audio, rate):
            data = base64.b64encode(piece.astype("<i2").tobytes()).decode()
            if fault == "garbage":
                data = "%%% not base64 %%%"
            events.append(_event("chunk", {"data": data, "done": False, "status_code": 206, "step_time": 12.5}))
            sent += len(piece)
            started = [w for w in words if w.start_s < sent / rate]
            if body.get("add_timestamps") and started:
                words = words[len(started) :]
                timestamps = {
                    "words": [w.word for w in started],
                    "start": [round(w.start_s, 4) for w in started],
                    "end": [round(w.end_s, 4) for w in started],
                }
                events.append(_event("timestamps", {"done": False, "status_code": 206, "word_timestamps": timestamps}))
        events.append(_event("done", {"done": True, "status_code": 200}))
        self.stream(request, events, "text/event-stream", fault)

    def voices(self, request: Request, match: re.Match[str]) -> None:
        if not self._admitted(request, self.next_fault()):
            return
        query = dict(parse_qsl(urlsplit(request.recorded.path).query))
        limit = max(1, min(100, int(query.get("limit", "10"))))
        ids = [v["id"] for v in VOICES]
        after = query.get("starting_after")
        first = ids.index(after) + 1 if after in ids else 0
        page = VOICES[first : first + limit]
        request.send_json(200, {"data": page, "has_more": first + limit < len(VOICES)})

    routes = [("POST", r"/tts/sse", sse), ("GET", r"/voices", voices)]


def _invalid(body: object) -> tuple[int, str] | None:
    """(status, message) for the first thing Cartesia would refuse in the body, else None."""
    if not isinstance(body, dict):
        return (400, "The body must be a JSON object.")
    for field in ("model_id", "transcript", "voice", "output_format"):
        if field not in body:
            return (400, f"Missing required field '{field}'.")
    if body["model_id"] not in MODELS:
        return (400, f"Unknown model_id '{body['model_id']}'.")
    if not isinstance(body["transcript"], str) or not body["transcript"]:
        return (400, "The transcript must be a non-empty string.")
    voice = body["voice"]
    voice_id = voice.get("id") if isinstance(voice, dict) else voice
    if voice_id not in {v["id"] for v in VOICES}:
        return (404, f"Voice '{voice_id}' not found.")
    fmt = body["output_format"]
    if not isinstance(fmt, dict) or fmt.get("container") != "raw" or fmt.get("encoding") != "pcm_s16le":
        # Other containers and encodings are documented; poc asks for raw pcm_s16le only.
        return (400, "This simulator serves output_format container 'raw', encoding 'pcm_s16le'.")
    if fmt.get("sample_rate") not in RATES:
        return (400, f"Unsupported sample_rate {fmt.get('sample_rate')}.")
    return None
