"""A local Azure AI Speech text-to-speech service, as the official Speech SDK talks to it.

The SDK pointed at `host="ws://127.0.0.1:PORT"` (how Microsoft's own on-prem containers are
used) opens a WebSocket to /cognitiveservices/websocket/v1 (sub-protocol "USP", the key in
`Ocp-Apim-Subscription-Key`) and sends three text frames, each "Name:value" header lines, a
blank line and a body: `speech.config` (SDK/OS context), `synthesis.context` (output format,
which metadata to send) and `ssml` (the request, with an `X-RequestId`). The service answers,
under the same `X-RequestId`: `turn.start`; then `audio.metadata` text frames (JSON
`{"Metadata": [{"Type": "Viseme", "Data": {"Offset": ticks, "VisemeId": n}}]}`, offsets in
100-ns ticks from the start of the audio) before the `audio` binary frames they describe (a
2-byte big-endian header length, the headers, then raw PCM); finally `turn.end`. Voices are
listed over plain HTTP on the same host: GET /cognitiveservices/voices/list.

What the SDK sends was found by running it against a logging server; this one speaks it back.
The HTTP server of `simulators.base` owns the port: a request that asks to upgrade to a
WebSocket is handed to `websockets`' own server-side handler, everything else is plain HTTP.

Faults (queue them in `faults`): `HttpFault(status)` refuses the next WebSocket upgrade or
voices request (the SDK reports the status); `STALL` sends the first `stall_after` audio
frames of the next utterance, then nothing; `KEEPALIVE` sends the first `stall_after` audio
frames, then only viseme metadata (no audio) every `keepalive_s`, for as long as the SDK
listens; `BAD_AUDIO` ends the next utterance in half a sample (raw PCM whose length is odd
cannot be 16-bit audio).
"""

from __future__ import annotations

import functools
import json
import re
import socket
import time
from typing import Any
from xml.etree import ElementTree

import attrs
import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from poc.simulators.base import Recorded, Request, VendorServer

WS_PATHS = ("/cognitiveservices/websocket/v1", "/tts/cognitiveservices/websocket/v1")
# outputFormat names (synthesis.context) of the raw PCM formats, and their sample rates.
RAW_FORMATS = {
    "raw-8khz-16bit-mono-pcm": 8000,
    "raw-16khz-16bit-mono-pcm": 16000,
    "raw-22050hz-16bit-mono-pcm": 22050,
    "raw-24khz-16bit-mono-pcm": 24000,
    "raw-44100hz-16bit-mono-pcm": 44100,
    "raw-48khz-16bit-mono-pcm": 48000,
}
TICKS_PER_SECOND = 10_000_000
VISEME_CLOSED = 21  # p, b, m
VISEME_OPEN = 2  # ɑ
VISEME_SILENCE = 0
SYLLABLE_S = 0.24
CLOSURE_S = 0.07  # the lips are shut (near silence) for this long at each syllable's start
DEFAULT_VOICES = (
    ("en-US-AriaNeural", "Aria", "en-US"),
    ("en-US-AvaMultilingualNeural", "Ava Multilingual", "en-US"),
    ("de-DE-KatjaNeural", "Katja", "de-DE"),
)


@attrs.frozen
class HttpFault:
    status: int
    headers: dict[str, str] = attrs.field(factory=dict)


STALL = "stall"
KEEPALIVE = "keepalive"
BAD_AUDIO = "bad_audio"


@attrs.frozen
class Turn:
    """One synthesis request as the SDK sent it."""

    headers: dict[str, str]  # the WebSocket upgrade's headers, names lower-cased
    context: dict[str, Any]  # synthesis.context body
    ssml: str

    @property
    def voice(self) -> str | None:
        node = ElementTree.fromstring(self.ssml).find("{http://www.w3.org/2001/10/synthesis}voice")
        return None if node is None else node.get("name")

    @property
    def output_format(self) -> str:
        return str(self.context["synthesis"]["audio"]["outputFormat"])


def speech_like(text: str, rate: int) -> tuple[np.ndarray, list[tuple[float, int]]]:
    """A voiced, speech-like signal for `text` and its visemes as (seconds, viseme id).

    One syllable per vowel group: lips closed (a quiet murmur, viseme 21 "m") for CLOSURE_S,
    then an open vowel (viseme 2 "ɑ"): a 120-140 Hz glottal pulse train through three formant
    resonances, with a rising and falling envelope. Ends with viseme 0 (silence). So a test can
    check that a mouth mark lands where the audio says it should: quiet at closures, loud in
    vowels.
    """
    syllables = max(1, len(re.findall(r"[aeiouyAEIOUY]+", text)))
    per = int(SYLLABLE_S * rate)
    closure = int(CLOSURE_S * rate)
    vowel = per - closure
    syllable = _voiced(per, rate).copy()
    syllable[:closure] *= 0.01
    syllable[closure:] *= np.sin(np.pi * np.arange(vowel) / vowel) ** 0.5
    visemes: list[tuple[float, int]] = []
    for index in range(syllables):
        visemes.append((index * per / rate, VISEME_CLOSED))
        visemes.append(((index * per + closure) / rate, VISEME_OPEN))
    visemes.append((syllables * per / rate, VISEME_SILENCE))
    signal = np.tile(syllable, syllables)
    signal *= 0.5 * 32767 / max(1e-9, float(np.max(np.abs(signal))))
    return signal.astype(np.int16), visemes


@functools.lru_cache(maxsize=8)
def _voiced(samples: int, rate: int) -> np.ndarray:
    """A glottal pulse train (pitch gliding 120-140 Hz) through three formant resonances."""
    t = np.arange(samples) / rate
    pitch = 130 + 10 * np.sin(2 * np.pi * 4 * t)
    phase = np.cumsum(pitch / rate)
    pulses = (np.diff(np.floor(phase), prepend=0.0) > 0).astype(np.float64)
    voiced = np.zeros_like(pulses)
    for formant, bandwidth in ((700, 110), (1200, 120), (2600, 160)):
        voiced += _resonate(pulses, formant, bandwidth, rate)
    return voiced


def _resonate(x: np.ndarray, freq: float, bandwidth: float, rate: int) -> np.ndarray:
    """A two-pole resonator (one formant), run over x."""
    r = np.exp(-np.pi * bandwidth / rate)
    a1, a2 = 2 * r * np.cos(2 * np.pi * freq / rate), -r * r
    y = np.zeros_like(x)
    y1 = y2 = 0.0
    for i, value in enumerate(x):  # one syllable (a quarter second): a plain loop is enough
        y0 = value + a1 * y1 + a2 * y2
        y[i] = y0
        y2, y1 = y1, y0
    return y


class AzureSpeechServer(VendorServer):
    """The Speech service's TTS WebSocket and voices list on one local port."""

    def __init__(
        self,
        api_key: str = "test-azure-key",
        *,
        voices: tuple[tuple[str, str, str], ...] = DEFAULT_VOICES,
        frame_s: float = 0.1,
        pace_s: float = 0.02,
        first_byte_delay: float = 0.0,
        stall_after: int = 2,
        keepalive_s: float = 0.1,
    ) -> None:
        self.api_key = api_key
        self.voices = voices
        self.frame_s = frame_s  # audio per binary frame
        self.pace_s = pace_s  # wall time between frames
        self.first_byte_delay = first_byte_delay
        self.stall_after = stall_after
        self.keepalive_s = keepalive_s  # between the metadata frames of a KEEPALIVE fault
        self.turns: list[Turn] = []
        self.finished_at: list[float] = []  # time.monotonic() each utterance's last frame left
        super().__init__()
        self._dummy = socket.socket()  # websockets wants a listening socket; ours is the HTTP one
        # No keep-alive pings: a connection lives one utterance, and on a busy machine a late
        # pong would only print a traceback from the server's thread.
        self._ws = serve(
            self._serve_ws, sock=self._dummy, subprotocols=["USP"], process_request=self._upgrade,
            ping_interval=None,
        )
        plain = self._http.finish_request

        def finish_request(sock: socket.socket, address: Any) -> None:
            # Runs in the HTTP server's per-connection thread: peek at the request head to
            # see whether it is a WebSocket upgrade, without consuming it.
            head = sock.recv(4096, socket.MSG_PEEK).lower()
            if b"upgrade: websocket" in head:
                self._ws.handler(sock, address)
            else:
                plain(sock, address)

        self._http.finish_request = finish_request  # type: ignore[method-assign]

    def voices_list(self, request: Request, match: "re.Match[str]") -> None:
        fault = self._pop_http()
        if fault is not None:
            request.send_json(fault.status, {"error": "fault"}, fault.headers)
            return
        if request.headers.get("ocp-apim-subscription-key") != self.api_key:
            denied = "Access denied due to invalid subscription key"
            request.send_json(401, {"error": {"code": "401", "message": denied}})
            return
        request.send_json(
            200,
            [
                {"Name": f"Microsoft Server Speech Text to Speech Voice ({loc}, {sn.split('-', 2)[2]})",
                 "DisplayName": name, "LocalName": name, "ShortName": sn, "Gender": "Female",
                 "Locale": loc, "SampleRateHertz": "48000", "VoiceType": "Neural", "Status": "GA"}
                for sn, name, loc in self.voices
            ],
        )  # fmt: skip

    routes = [("GET", "/cognitiveservices/voices/list", voices_list)]

    def stop(self) -> None:
        super().stop()
        self._dummy.close()

    def _pop_http(self) -> HttpFault | None:
        """The next queued fault if it refuses a request (checked at upgrade / voices list)."""
        if self.faults and isinstance(self.faults[0], HttpFault):
            return self.faults.popleft()
        return None

    def _pop_stream(self) -> str | None:
        """The next queued fault if it spoils an utterance (checked per ssml request)."""
        if self.faults and self.faults[0] in (STALL, KEEPALIVE, BAD_AUDIO):
            return str(self.faults.popleft())
        return None

    def _upgrade(self, connection: ServerConnection, request: Any) -> Any:
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        self.requests.append(Recorded("GET", request.path, headers, b""))
        if request.path.split("?", 1)[0] not in WS_PATHS:
            return connection.respond(404, "no such endpoint\n")
        fault = self._pop_http()
        if fault is not None:
            response = connection.respond(fault.status, "fault\n")
            for name, value in fault.headers.items():
                response.headers[name] = value
            return response
        if headers.get("ocp-apim-subscription-key") != self.api_key:
            return connection.respond(401, "Access denied due to invalid subscription key\n")
        return None

    def _serve_ws(self, ws: ServerConnection) -> None:
        headers = {k.lower(): v for k, v in ws.request.headers.raw_items()} if ws.request else {}
        context: dict[str, Any] = {}
        try:
            for message in ws:
                if not isinstance(message, str):
                    continue
                head, _, body = message.partition("\r\n\r\n")
                fields = _headers(head)
                path = fields.get("path", "").lower()
                if path == "synthesis.context":
                    context = json.loads(body)
                elif path == "ssml":
                    turn = Turn(headers, context, body)
                    self.turns.append(turn)
                    if not self._speak(ws, fields.get("x-requestid", ""), turn):
                        return
        except ConnectionClosed:
            pass  # the SDK went away (a stop, a timeout): nothing left to say

    def _speak(self, ws: ServerConnection, request_id: str, turn: Turn) -> bool:
        """Answer one ssml request; False when the connection was closed on purpose."""
        rate = RAW_FORMATS.get(turn.output_format)
        known = {sn for sn, _, _ in self.voices}
        if rate is None:
            ws.close(1007, f"Unsupported output format {turn.output_format}")
            return False
        if turn.voice not in known:
            ws.close(1007, f"Unsupported voice {turn.voice}.")
            return False
        fault = self._pop_stream()
        text = "".join(ElementTree.fromstring(turn.ssml).itertext())
        audio, visemes = speech_like(text, rate)
        pcm = audio.astype("<i2").tobytes()
        if fault == BAD_AUDIO:
            pcm = pcm[:-1]
        metadata = turn.context.get("synthesis", {}).get("audio", {}).get("metadataOptions", {})
        send_visemes = bool(metadata.get("visemeEnabled"))
        prefix = f"X-RequestId:{request_id}\r\n"
        ws.send(prefix + "Content-Type:application/json; charset=utf-8\r\nPath:turn.start\r\n\r\n"
                + json.dumps({"context": {"serviceTag": "poc-simulator"}}))  # fmt: skip
        if self.first_byte_delay:
            time.sleep(self.first_byte_delay)
        step = 2 * max(1, int(self.frame_s * rate))
        for index, begin in enumerate(range(0, len(pcm), step)):
            if fault in (STALL, KEEPALIVE) and index >= self.stall_after:
                if fault == KEEPALIVE:
                    self._keep_alive(ws, prefix, begin / 2 / rate)
                else:
                    self.stalled.wait(60)
                return False
            end_s = (begin + step) / 2 / rate
            due = [(s, v) for s, v in visemes if begin / 2 / rate <= s < end_s]
            if send_visemes and due:
                entries = [{"Type": "Viseme", "Data": {"Offset": round(s * TICKS_PER_SECOND), "VisemeId": v}}
                           for s, v in due]  # fmt: skip
                ws.send(prefix + "Content-Type:application/json; charset=utf-8\r\nPath:audio.metadata\r\n\r\n"
                        + json.dumps({"Metadata": entries}))  # fmt: skip
            frame_head = (prefix + "Content-Type:audio/x-wav\r\nPath:audio\r\n").encode()
            ws.send(len(frame_head).to_bytes(2, "big") + frame_head + pcm[begin : begin + step])
            if index == 0:
                self.first_byte_at.append(time.monotonic())
            if self.pace_s:
                time.sleep(self.pace_s)
        self.finished_at.append(time.monotonic())
        ws.send(prefix + "Path:turn.end\r\n\r\n{}")
        return True

    def _keep_alive(self, ws: ServerConnection, prefix: str, at_s: float) -> None:
        """Metadata without audio (a silence viseme where the audio stopped), every
        `keepalive_s`, until the SDK hangs up or the server stops."""
        entry = {"Type": "Viseme", "Data": {"Offset": round(at_s * TICKS_PER_SECOND), "VisemeId": VISEME_SILENCE}}
        frame = (prefix + "Content-Type:application/json; charset=utf-8\r\nPath:audio.metadata\r\n\r\n"
                 + json.dumps({"Metadata": [entry]}))  # fmt: skip
        while not self.stalled.wait(self.keepalive_s):
            ws.send(frame)


def _headers(head: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in head.split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return fields

