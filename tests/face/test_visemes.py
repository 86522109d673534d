"""Mouth poses over time: visemes, loudness and smoothing (poc.face.visemes)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from poc.face.base import SpeechSlot
from poc.face.mouth import REST
from poc.face.visemes import (
    LOOKAHEAD,
    NOISE_FLOOR_DBFS,
    MouthTrack,
    iter_tracked,
    loudness,
    rms_dbfs,
    viseme_for,
)

FPS = 25
SAMPLES = 48000 // FPS


def tone(dbfs: float, n: int = SAMPLES) -> np.ndarray:
    """A 220 Hz sine whose RMS is `dbfs`."""
    amplitude = 32768.0 * math.sqrt(2.0) * 10 ** (dbfs / 20.0)
    t = np.arange(n) / 48000.0
    return np.round(amplitude * np.sin(2 * np.pi * 220.0 * t)).astype(np.int16)


def silence(n: int = SAMPLES) -> np.ndarray:
    return np.zeros(n, dtype=np.int16)


def test_phonemes_pick_the_mouth_shape() -> None:
    """m/b/p close the lips, "ee" spreads, "oo" rounds, "a" opens widest."""
    for bilabial in "mbp":
        assert viseme_for(bilabial).open < 0
    assert viseme_for("i").width > 0.5
    for rounded in ("u", "w", "oʊ", "ʊ"):
        assert viseme_for(rounded).width < 0, rounded
    opening = {p: viseme_for(p).open for p in ("a", "ə", "i", "u", "t", "s")}
    assert max(opening, key=opening.get) == "a"


@pytest.mark.parametrize("symbol", ["ˈ", "ˌ", "ː", " ", ".", ",", "!", "?", "^", "$", "", None])
def test_marks_and_pauses_have_no_shape_of_their_own(symbol: str | None) -> None:
    assert viseme_for(symbol) is None


def test_marks_in_front_of_a_sound_are_skipped() -> None:
    assert viseme_for("ˈa") == viseme_for("a")


def test_loudness_is_zero_at_the_noise_floor_and_grows_with_level() -> None:
    assert rms_dbfs(silence()) == -math.inf
    assert rms_dbfs(np.zeros(0, dtype=np.int16)) == -math.inf
    assert rms_dbfs(tone(-20.0)) == pytest.approx(-20.0, abs=0.1)
    assert loudness(rms_dbfs(silence())) == 0.0
    assert loudness(NOISE_FLOOR_DBFS - 5) == 0.0
    levels = [loudness(db) for db in (-40.0, -30.0, -20.0)]
    assert levels == sorted(levels) and levels[0] > 0.0
    assert loudness(0.0) == 1.0


def test_one_pose_per_slot_in_order_whatever_the_feeding() -> None:
    track = MouthTrack(FPS)
    out = []
    for i in range(9):
        out += track.push(SpeechSlot(100 + i, tone(-20.0)))
        # Never more than LOOKAHEAD slots held back.
        assert (i + 1) - len(out) <= LOOKAHEAD
    out += track.finish()
    assert [t.slot.index for t in out] == list(range(100, 109))
    assert track.finish() == []


def test_silence_is_a_silent_resting_mouth() -> None:
    tracked = list(iter_tracked(FPS, [SpeechSlot(i, silence()) for i in range(10)]))
    assert all(t.silent and t.pose == REST for t in tracked)


def test_louder_audio_opens_the_mouth_further() -> None:
    def peak_open(dbfs: float) -> float:
        slots = [SpeechSlot(i, tone(dbfs)) for i in range(12)]
        return max(t.pose.open for t in iter_tracked(FPS, slots))

    quiet, loud = peak_open(-36.0), peak_open(-20.0)
    assert 0.0 < quiet < loud


def test_open_vowels_open_further_than_closed_consonants() -> None:
    def open_at_middle(phoneme: str) -> float:
        slots = [SpeechSlot(i, tone(-20.0), phoneme) for i in range(9)]
        return list(iter_tracked(FPS, slots))[4].pose.open

    assert open_at_middle("a") > open_at_middle("ə") > open_at_middle("t") > 0.0
    assert open_at_middle("m") < 0.0  # lips pressed together


def test_a_one_frame_phoneme_does_not_flicker() -> None:
    """A single loud frame between silences becomes a gentle bump over several frames."""
    slots = [SpeechSlot(i, tone(-15.0) if i == 5 else silence(), "a" if i == 5 else " ")
             for i in range(11)]
    opens = [t.pose.open for t in iter_tracked(FPS, slots)]
    assert max(opens) < 0.8  # never the full target ("a" at full loudness) in one frame
    assert sum(o > 0.1 for o in opens) >= 3  # spread over its neighbours
    assert opens[4] > 0.0  # and anticipated a little
    steps = np.abs(np.diff(opens))
    assert steps.max() < 0.5


def test_an_utterance_ends_on_the_resting_mouth_even_mid_word() -> None:
    slots = [SpeechSlot(i, tone(-15.0), "a") for i in range(10)]
    tracked = list(iter_tracked(FPS, slots))
    assert tracked[-1].pose == REST
    assert 0.0 < tracked[-2].pose.open < tracked[-4].pose.open  # eased down, not snapped


def test_a_very_short_utterance_still_yields_every_slot() -> None:
    tracked = list(iter_tracked(FPS, [SpeechSlot(7, tone(-15.0), "a")]))
    assert [t.slot.index for t in tracked] == [7]
    assert tracked[0].pose == REST


def test_stress_and_length_marks_belong_to_their_vowel() -> None:
    """piper times 'ˈ' before a stressed vowel and 'ː' after a long one: the mouth holds the
    vowel's shape through them instead of falling back to a neutral one."""

    def widths(sequence: list[str]) -> list[float]:
        slots = [SpeechSlot(i, tone(-18.0), p) for i, p in enumerate(sequence)]
        return [t.pose.width for t in iter_tracked(FPS, slots)]

    rounded = widths(["t", "ˈ", "ˈ", "u", "ː", "ː", "t", "t"])
    neutral = widths(["t", " ", " ", "u", " ", " ", "t", "t"])
    assert rounded[2] < neutral[2] < 0.5  # the stress mark already rounds the lips
    assert rounded[5] < neutral[5]  # the length mark keeps them round
    spread = widths(["t", "i", "ː", "ː", "ː", "t", "t", "t"])
    assert spread[3] > 0.5
