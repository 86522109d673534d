"""From speech slots to mouth poses over time: visemes, the audio envelope, smoothing.

Each slot gets a target pose. With phoneme timings (piper) the phoneme picks the shape (closed
for m/b/p, spread for "ee", rounded for "oo", open for "a", medium otherwise) and the loudness
scales how far it opens. Symbols that are not sounds (word gaps, punctuation, piper's ^ and $)
carry no shape of their own and follow the audio, which is what closes the mouth in pauses;
piper gives stress and length marks time of their own, so a stress mark takes the shape of the
sound it precedes and a length mark that of the sound it lengthens. Without timings the
loudness alone drives the opening.

Loudness is the slot's RMS in dBFS, mapped to 0..1 above a noise floor (so room noise in a
recorded message does not keep the mouth ajar) and followed with a fast attack and a slower
release, as a jaw does. What counts as full loudness comes down (a little) to the loudest slot
heard so far, so a quietly recorded message still moves the mouth.

Targets then pass through a short centred smoothing window, so a one-frame phoneme becomes a
gentle dip or peak instead of a flicker. Centring it needs `LOOKAHEAD` future slots, which is why
`MouthTrack` holds the last few slots back until more arrive or the utterance finishes; at the
finish it eases those last frames down to the resting mouth.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Iterator

import attrs
import numpy as np

from poc.face.base import SpeechSlot
from poc.face.mouth import REST, MouthPose

NOISE_FLOOR_DBFS = -45.0  # at or below: silence, mouth at rest
FULL_OPEN_DBFS = -14.0  # at or above: loudness 1
QUIET_FULL_OPEN_DBFS = -26.0  # for a quiet recording, "full" may come down this far
LOUDNESS_CURVE = 1.6
ENVELOPE_MAX_OPEN = 0.75  # opening at loudness 1 when no phoneme says otherwise
ATTACK_S = 0.025
RELEASE_S = 0.06
SMOOTHING_SIGMA_S = 0.045
CLOSURE_KEEP = 0.7  # share of a lip closure that survives smoothing
LOOKAHEAD = 2  # slots held back for the centred window and the closing ease

_CLOSED = MouthPose(open=-1.0, width=0.0)  # lips pressed: m, b, p
_LABIODENTAL = MouthPose(open=-0.35, width=0.1)  # lower lip to upper teeth: f, v
_OPEN = MouthPose(open=0.8, width=0.15)
_MID = MouthPose(open=0.5, width=0.25)
_SCHWA = MouthPose(open=0.4, width=0.0)
_WIDE = MouthPose(open=0.28, width=1.0)  # "ee"
_WIDE_LAX = MouthPose(open=0.33, width=0.7)
_ROUND = MouthPose(open=0.28, width=-1.0)  # "oo"
_ROUND_LAX = MouthPose(open=0.35, width=-0.8)
_ROUND_OPEN = MouthPose(open=0.5, width=-0.7)  # "o"
_ROUND_WIDE_OPEN = MouthPose(open=0.65, width=-0.35)  # "aw"
_W = MouthPose(open=0.15, width=-1.0)
_POSTALVEOLAR = MouthPose(open=0.25, width=-0.5)  # sh, zh, ch, j
_R = MouthPose(open=0.3, width=-0.4)
_SIBILANT = MouthPose(open=0.2, width=0.4)
_DENTAL = MouthPose(open=0.3, width=0.1)
_ALVEOLAR = MouthPose(open=0.35, width=0.1)
_VELAR = MouthPose(open=0.45, width=0.0)
MEDIUM = MouthPose(open=0.4, width=0.0)

# espeak/IPA symbols as piper emits them (one code point each; multi-letter strings go by their
# first symbol that is a sound).
VISEMES: dict[str, MouthPose] = {
    **dict.fromkeys("mbp", _CLOSED),
    **dict.fromkeys("fv", _LABIODENTAL),
    **dict.fromkeys("aɑæʌɐɒ", _OPEN),
    **dict.fromkeys("eɛɜɝ", _MID),
    **dict.fromkeys("əɚ", _SCHWA),
    **dict.fromkeys("iyj", _WIDE),
    **dict.fromkeys("ɪᵻʏ", _WIDE_LAX),
    **dict.fromkeys("uɯ", _ROUND),
    **dict.fromkeys("ʊ", _ROUND_LAX),
    **dict.fromkeys("oøɵ", _ROUND_OPEN),
    **dict.fromkeys("ɔœ", _ROUND_WIDE_OPEN),
    **dict.fromkeys("wʍɥ", _W),
    **dict.fromkeys("ʃʒɕʑ", _POSTALVEOLAR),
    **dict.fromkeys("ɹrɾɻʁʀ", _R),
    **dict.fromkeys("sz", _SIBILANT),
    **dict.fromkeys("θð", _DENTAL),
    **dict.fromkeys("tdnlɫɬ", _ALVEOLAR),
    **dict.fromkeys("kgɡŋhxɣʔqç", _VELAR),
}

# Not sounds: stress and length marks, tie bars, word and phrase boundaries, punctuation.
_NEUTRAL = set("ˈˌːˑ̃‿͡ ^$_#|‖.,;:!?¡¿-—–…'\"()")
# Stress marks come just before the stressed vowel, length marks just after a long one: they
# belong to those sounds, not to a pause.
_STRESS = set("ˈˌ")
_LENGTH = set("ːˑ")


def _mark_kind(phoneme: str | None) -> str | None:
    """Whether the phoneme is only a stress mark ("stress") or a length mark ("length")."""
    if phoneme and all(c in _STRESS for c in phoneme):
        return "stress"
    if phoneme and all(c in _LENGTH for c in phoneme):
        return "length"
    return None


def viseme_for(phoneme: str | None) -> MouthPose | None:
    """The target pose of a phoneme, or None when it carries no shape (then the audio decides)."""
    if not phoneme:
        return None
    for symbol in phoneme:
        if symbol in _NEUTRAL or not (symbol.isalpha() or symbol in VISEMES):
            continue  # marks and diacritics: look at the next symbol
        return VISEMES.get(symbol, MEDIUM)
    return None


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level of int16 samples in dB relative to full scale; -inf for no samples."""
    if samples.size == 0:
        return -math.inf
    mean_square = float(np.mean(np.square(samples, dtype=np.float64)))
    if mean_square <= 0.0:
        return -math.inf
    return 10.0 * math.log10(mean_square / (32768.0 * 32768.0))


def loudness(dbfs: float, full_dbfs: float = FULL_OPEN_DBFS) -> float:
    """0 at the noise floor and below, 1 at full_dbfs and above, curved so that the quieter
    half of speech (consonants, syllable edges) opens the mouth clearly less than its peaks."""
    span = max(1.0, full_dbfs - NOISE_FLOOR_DBFS)
    return min(1.0, max(0.0, (dbfs - NOISE_FLOOR_DBFS) / span)) ** LOUDNESS_CURVE


class EnvelopeFollower:
    """One-pole follower with separate attack and release, stepped once per frame."""

    def __init__(self, fps: float, attack_s: float = ATTACK_S, release_s: float = RELEASE_S):
        self._attack = 1.0 - math.exp(-1.0 / (fps * attack_s))
        self._release = 1.0 - math.exp(-1.0 / (fps * release_s))
        self.value = 0.0

    def step(self, level: float) -> float:
        rate = self._attack if level > self.value else self._release
        self.value += (level - self.value) * rate
        if self.value < 1e-3:
            self.value = 0.0  # settle exactly, so silence ends on a truly closed mouth
        return self.value


@attrs.frozen
class TrackedSlot:
    """A slot with its final pose; `silent` means its audio is below the noise floor."""

    slot: SpeechSlot
    pose: MouthPose
    silent: bool


def _kernel(fps: float) -> np.ndarray:
    sigma = max(0.5, SMOOTHING_SIGMA_S * fps)
    offsets = np.arange(-LOOKAHEAD, LOOKAHEAD + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


@attrs.define
class _Pending:
    slot: SpeechSlot
    target: tuple[float, float]
    silent: bool
    level: float  # followed loudness at this slot
    awaits_sound: bool = False  # a stress mark: takes the next sound's shape when it comes


class MouthTrack:
    """Per-utterance state: slots in, smoothed poses out, LOOKAHEAD slots behind.

    The utterance starts from the resting mouth (the idle frame) and ends on it: targets before
    the first slot and after the last count as rest, and `finish` eases the held-back frames
    down so that the very last one is at rest.
    """

    def __init__(self, fps: float) -> None:
        self._envelope = EnvelopeFollower(fps)
        self._weights = _kernel(fps)
        rest = (REST.open, REST.width)
        self._history: deque[tuple[float, float]] = deque([rest] * LOOKAHEAD, maxlen=LOOKAHEAD)
        self._pending: deque[_Pending] = deque()
        self._last_sound: MouthPose | None = None  # the shape a length mark continues
        self._loudest = QUIET_FULL_OPEN_DBFS

    def push(self, slot: SpeechSlot) -> list[TrackedSlot]:
        """Take one slot; return the slots whose pose is now settled (0 or 1 of them)."""
        dbfs = rms_dbfs(slot.audio)
        silent = dbfs <= NOISE_FLOOR_DBFS
        self._loudest = max(self._loudest, dbfs)
        level = self._envelope.step(loudness(dbfs, min(self._loudest, FULL_OPEN_DBFS)))
        kind = _mark_kind(slot.phoneme)
        pose = viseme_for(slot.phoneme)
        if kind == "length":
            pose = self._last_sound
        elif kind is None:
            self._last_sound = pose
        entry = _Pending(slot, self._target(pose, level), silent, level, kind == "stress")
        if pose is not None and kind is None:
            # Stress marks waiting just before this sound take its shape.
            for earlier in reversed(self._pending):
                if not earlier.awaits_sound:
                    break
                earlier.target = self._target(pose, earlier.level)
                earlier.awaits_sound = False
        elif kind != "stress":
            for earlier in self._pending:
                earlier.awaits_sound = False  # a pause came instead: keep the audio's opening
        self._pending.append(entry)
        if len(self._pending) <= LOOKAHEAD:
            return []
        return [self._emit(ease=1.0)]

    def finish(self) -> list[TrackedSlot]:
        """Settle the held-back slots, closing the mouth over them; the last one is at rest."""
        out = []
        while self._pending:
            left = len(self._pending) - 1  # slots still to come after this one
            out.append(self._emit(ease=min(left, LOOKAHEAD) / LOOKAHEAD))
        return out

    @staticmethod
    def _target(pose: MouthPose | None, level: float) -> tuple[float, float]:
        if pose is None:
            return (ENVELOPE_MAX_OPEN * level, 0.0)
        if pose.open > 0.0:  # loud vowels open further than soft ones
            return (pose.open * (0.55 + 0.45 * level), pose.width)
        return (pose.open, pose.width)

    def _emit(self, ease: float) -> TrackedSlot:
        """Pop the oldest pending slot with its pose: the window centred on it, scaled by ease."""
        entry = self._pending.popleft()
        future = [p.target for p in list(self._pending)[:LOOKAHEAD]]
        future += [(REST.open, REST.width)] * (LOOKAHEAD - len(future))
        window = np.array([*self._history, entry.target, *future])
        self._history.append(entry.target)
        opened, width = (window.T @ self._weights) * ease
        if entry.target[0] < 0.0:
            # Lips that close (m, b, p, f, v) must be seen to close, even for one frame: the
            # window alone would average a short closure away between two vowels.
            opened = min(opened, CLOSURE_KEEP * entry.target[0] * ease)
        pose = MouthPose(open=float(opened), width=float(width))
        pose = REST if pose.is_rest else pose
        return TrackedSlot(slot=entry.slot, pose=pose, silent=entry.silent)


def iter_tracked(fps: float, slots: list[SpeechSlot]) -> Iterator[TrackedSlot]:
    """All of an utterance's slots with their poses (for tools and tests)."""
    track = MouthTrack(fps)
    for slot in slots:
        yield from track.push(slot)
    yield from track.finish()
