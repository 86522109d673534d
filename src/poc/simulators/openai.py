"""A local OpenAI speech endpoint, as the API reference describes it.

`POST /v1/audio/speech` with a JSON body: `model`, `input` (at most 4096 characters) and `voice`
(a built-in name or `{"id": "voice_..."}`) are required; `response_format` defaults to mp3.
With `response_format: "pcm"` the answer is raw 24 kHz 16-bit little-endian mono samples,
streamed with chunked transfer encoding as they are made (no container, no timings). The key is
`Authorization: Bearer <key>`; without it: 401 with OpenAI's error object. Errors are
`{"error": {"message", "type", "param", "code"}}`.

Faults besides the shared ones (see simulators/voice.py): "garbage" answers an HTML error page
(what a misconfigured proxy sends), "odd" streams PCM with one byte too many. What an
OpenAI-compatible server that ignores response_format sends: "mp3" answers MP3 (audio/mpeg, an
ID3 tag then frames), "wav" a WAV file of the samples (audio/wav), "mislabelled" the raw PCM
labelled audio/mpeg (as some proxies label every answer). "endless" repeats the text's audio
without end (a model stuck in a loop) until the client hangs up.
"""

from __future__ import annotations

import io
import itertools
import re
import wave

import numpy as np

from poc.simulators.base import Request
from poc.simulators.voice import VoiceServer, speak

PCM_RATE = 24000
MAX_INPUT_CHARS = 4096
MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15")
VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse",
    "marin", "cedar",
)  # fmt: skip
CUSTOM_VOICES = ("voice_1234",)
FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")


def _error(
    request: Request, status: int, message: str, kind: str, code: str | None,
    param: str | None = None, headers: dict[str, str] | None = None,
) -> None:  # fmt: skip
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    request.send_json(status, body, headers)


class OpenAIServer(VoiceServer):
    """OpenAI's speech endpoint on 127.0.0.1 (see the module docstring)."""

    def speech(self, request: Request, match: re.Match[str]) -> None:
        fault = self.next_fault()
        if fault == "401" or request.headers.get("authorization") != f"Bearer {self.api_key}":
            # OpenAI's message shows part of the key; this shows all of it, so a leak shows.
            shown = request.headers.get("authorization", "")[7:]
            _error(
                request, 401, f"Incorrect API key provided: {shown}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.", "invalid_request_error", "invalid_api_key",
            )  # fmt: skip
            return
        if fault == "429":
            _error(
                request, 429, "Rate limit reached for requests.", "requests", "rate_limit_exceeded",
                headers={"Retry-After": self.retry_after},
            )  # fmt: skip
            return
        if fault == "500":
            _error(request, 500, "The server had an error while processing your request.", "server_error", None)
            return
        try:
            body = request.json()
        except ValueError:
            _error(request, 400, "We could not parse the JSON body of your request.", "invalid_request_error", None)
            return
        problem = _invalid(body)
        if problem is not None:
            _error(request, 400, problem[1], "invalid_request_error", "invalid_value", problem[0])
            return
        if body.get("response_format", "mp3") != "pcm":
            # Documented, but poc only ever asks for pcm: the simulator does not encode mp3.
            _error(request, 400, "This simulator only serves response_format 'pcm'.", "invalid_request_error",
                   "invalid_value", "response_format")  # fmt: skip
            return
        if fault == "mp3":
            self.stream(request, [_mp3_like(len(body["input"]))], "audio/mpeg", None)
            return
        if fault == "garbage":
            page = b"<html><body><h1>502 Bad Gateway</h1></body></html>\n"
            self.stream(request, [page], "text/html", None)
            return
        data = speak(body["input"], PCM_RATE).audio.astype("<i2").tobytes()
        content_type = "audio/mpeg" if fault == "mislabelled" else "audio/pcm"
        if fault == "wav":
            data, content_type = _wav(data), "audio/wav"
        if fault == "odd":
            data += b"\x00"
        # Pieces of an odd number of bytes: the network does not respect sample borders.
        step = round(self.chunk_seconds * PCM_RATE) * 2 + 1
        pieces = [data[i : i + step] for i in range(0, len(data), step)]
        if fault == "endless":
            self.stream(request, itertools.cycle(pieces), content_type, None)
            return
        self.stream(request, pieces, content_type, fault)

    routes = [("POST", r"/v1/audio/speech", speech)]


def _wav(pcm: bytes) -> bytes:
    """`pcm` (16-bit mono at PCM_RATE) as a WAV file, as Python's wave module writes one."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(PCM_RATE)
        wav.writeframes(pcm)
    return out.getvalue()


def _mp3_like(characters: int) -> bytes:
    """Bytes shaped like an MP3 file (an ID3v2 tag, then 128 kb/s frame headers and noise); as
    raw PCM it would be a burst of noise."""
    tag = b"ID3\x04\x00\x00\x00\x00\x00\x00"
    noise = np.random.default_rng(characters).integers(0, 256, 413, dtype=np.uint8).tobytes()
    return tag + (b"\xff\xfb\x90\x64" + noise) * (4 * characters)


def _invalid(body: object) -> tuple[str, str] | None:
    """(param, message) for the first thing OpenAI would refuse in the body, else None."""
    if not isinstance(body, dict):
        return ("body", "The request body must be a JSON object.")
    for field in ("model", "input", "voice"):
        if field not in body:
            return (field, f"Missing required parameter: '{field}'.")
    if body["model"] not in MODELS:
        return ("model", f"Invalid value: '{body['model']}'. Supported values are: {', '.join(MODELS)}.")
    text = body["input"]
    if not isinstance(text, str) or not text or len(text) > MAX_INPUT_CHARS:
        return ("input", f"'input' must be a string of 1 to {MAX_INPUT_CHARS} characters.")
    voice = body["voice"]
    if isinstance(voice, dict):
        if voice.get("id") not in CUSTOM_VOICES:
            return ("voice", f"Voice {voice.get('id')!r} was not found.")
    elif voice not in VOICES:
        return ("voice", f"Invalid value: '{voice}'. Supported values are: {', '.join(VOICES)}.")
    if body.get("response_format", "mp3") not in FORMATS:
        return ("response_format", f"Invalid value: '{body['response_format']}'.")
    return None
