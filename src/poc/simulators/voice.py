"""What the voice simulators share: a speech-like signal with exact timings, and the knobs.

Real vendors answer with speech and say when each character or word is spoken. The simulators
need both, deterministic and at any sample rate, so they make a signal with the shape of speech
rather than speech: each character of the text gets `CHAR_SECONDS`; letters are a voiced tone (a
gliding 120-140 Hz fundamental with a few harmonics, like a vowel), vowels loud, other consonants
softer, m/b/p barely audible (closed lips), and spaces and punctuation are silent. Every
character fades in and out over a few milliseconds, so the signal has syllable-like envelopes and
no clicks. Because the timings are exact, a test can check that a mouth mark lands where its
sound is.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from functools import lru_cache

import attrs
import numpy as np

from poc.simulators.base import Request, VendorServer

CHAR_SECONDS = 0.06
FADE_SECONDS = 0.008
_VOWELS = set("aeiouyAEIOUY")
_CLOSED = set("mbpMBP")
_LEVELS = {"vowel": 0.45, "consonant": 0.18, "closed": 0.03}


@attrs.frozen
class TimedChar:
    char: str
    start_s: float
    end_s: float


@attrs.frozen
class TimedWord:
    word: str
    start_s: float
    end_s: float


@attrs.frozen
class Utterance:
    audio: np.ndarray  # int16 mono at `rate`
    rate: int
    chars: tuple[TimedChar, ...]

    @property
    def words(self) -> tuple[TimedWord, ...]:
        """Runs of non-space characters with their span."""
        out: list[TimedWord] = []
        current: list[TimedChar] = []
        for timed in (*self.chars, TimedChar(" ", 0.0, 0.0)):
            if timed.char.isspace():
                if current:
                    word = "".join(c.char for c in current)
                    out.append(TimedWord(word, current[0].start_s, current[-1].end_s))
                current = []
            else:
                current.append(timed)
        return tuple(out)


def _level(char: str) -> float:
    if char in _VOWELS:
        return _LEVELS["vowel"]
    if char in _CLOSED:
        return _LEVELS["closed"]
    if char.isalpha():
        return _LEVELS["consonant"]
    return 0.0


@lru_cache(maxsize=32)
def speak(text: str, rate: int) -> Utterance:
    """The signal for `text` at `rate` (cached: the same text gives the same samples)."""
    per_char = round(CHAR_SECONDS * rate)
    n = per_char * len(text)
    t = np.arange(n) / rate
    # A slowly gliding pitch, integrated so the phase is continuous across characters.
    f0 = 130.0 + 10.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in (1, 2, 3, 4, 5))
    envelope = np.zeros(n)
    fade = max(1, round(FADE_SECONDS * rate))
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, fade))
    chars: list[TimedChar] = []
    for index, char in enumerate(text):
        start = index * per_char
        level = _level(char)
        segment = np.full(per_char, level)
        segment[:fade] *= ramp
        segment[-fade:] *= ramp[::-1]
        envelope[start : start + per_char] = segment
        chars.append(TimedChar(char, start / rate, (start + per_char) / rate))
    audio = np.clip(np.rint(voiced * envelope * 32767 / 1.5), -32768, 32767).astype(np.int16)
    audio.flags.writeable = False
    return Utterance(audio=audio, rate=rate, chars=tuple(chars))


class VoiceServer(VendorServer):
    """A voice vendor's server: the key it accepts, how it streams, and scripted faults.

    Knobs (set before or between requests):
    - `first_byte_delay`: seconds between the response headers and the first audio.
    - `chunk_seconds`: audio per streamed piece; `chunk_interval`: seconds between pieces (a
      vendor generating in real time sends a piece per piece of audio).
    - `faults`: popped one per request: "401", "429" (with `retry_after`), "500", "stall"
      (the stream stops after `stall_after` pieces and stays open), "garbage" (audio that
      does not decode, in the vendor's format). Where the vendor's format has them (see
      `keepalives`): "keepalive" (after `stall_after` pieces, only events without audio, every
      `keepalive_interval`, never audio again) and "ping" (the same with bytes that make no
      event at all: an SSE comment, a blank line).
    - `finished_at`: time.monotonic() when each stream sent its last piece.
    """

    keepalives: dict[str, bytes] = {}  # fault -> what the stream repeats instead of audio

    def __init__(self, api_key: str = "test-key") -> None:
        super().__init__()
        self.api_key = api_key
        self.first_byte_delay = 0.0
        self.chunk_seconds = 0.1
        self.chunk_interval = 0.0
        self.retry_after = "2"
        self.stall_after = 1
        self.keepalive_interval = 0.1
        self.finished_at: list[float] = []

    def paced(self, parts: Iterable[bytes]) -> Iterator[bytes]:
        """`parts` with `chunk_interval` between them; notes when the last one was sent."""
        for index, part in enumerate(parts):
            if index and self.chunk_interval:
                time.sleep(self.chunk_interval)
            yield part
        self.finished_at.append(time.monotonic())

    def stream(self, request: Request, parts: Iterable[bytes], content_type: str, fault: object) -> None:
        """Send `parts` chunked, honouring the delay knobs and a "stall" or keep-alive fault."""
        idle = self.keepalives.get(fault, b"") if isinstance(fault, str) else b""
        request.send_chunked(
            200,
            self.paced(parts),
            content_type,
            first_byte_delay=self.first_byte_delay,
            stall_after=self.stall_after if fault == "stall" or idle else None,
            idle_part=idle,
            idle_interval=self.keepalive_interval,
        )

    def pieces(self, audio: np.ndarray, rate: int) -> list[np.ndarray]:
        """`audio` cut into `chunk_seconds` pieces."""
        step = max(1, round(self.chunk_seconds * rate))
        return [audio[i : i + step] for i in range(0, len(audio), step)]
