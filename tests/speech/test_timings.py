"""Vendor text timings move the mouth as piper's phonemes do: lips close on m/b/p, open on vowels."""

from __future__ import annotations

import pytest

from poc.face.visemes import iter_tracked, viseme_for
from poc.media.timeline import SlotCutter
from poc.simulators.voice import speak
from poc.speech.base import PhonemeMark, SpeechChunk
from poc.speech.timings import GAP, STOP, character_marks, spell, word_marks

RATE = 48000
FPS = 30


def test_letters_and_digraphs_spell_sounds_visemes_know() -> None:
    assert spell("thumb") == ["θ", "ʌ", "m", "b"]
    assert spell("Shoe") == ["ʃ", "o", "ɛ"]
    assert spell("Café") == ["k", "æ", "f", "ɛ"]  # accents count as their base letter
    assert spell("42") == []  # no letters: nothing to guess from
    for symbol in spell("abcdefghijklmnopqrstuvwxyz") + spell("thshchphngooeeouaiaw"):
        assert viseme_for(symbol) is not None, symbol


@pytest.mark.parametrize(
    ("word", "index", "expect"),
    [("map", 0, "closed"), ("bob", 0, "closed"), ("up", 1, "closed"), ("five", 0, "teeth"),
     ("see", 1, "spread"), ("zoo", 1, "rounded"), ("father", 1, "open")],
)  # fmt: skip
def test_each_mark_gives_the_mouth_shape_of_its_sound(word: str, index: int, expect: str) -> None:
    marks = character_marks(list(word), [i * 0.1 for i in range(len(word))], RATE)
    pose = viseme_for(marks[index][1])
    assert pose is not None
    shape = {
        "closed": pose.open < -0.5,
        "teeth": -0.5 <= pose.open < 0,
        "spread": pose.width > 0.5,
        "rounded": pose.width < -0.5,
        "open": pose.open > 0.6,
    }
    assert shape[expect], (word, marks, pose)


def test_character_marks_sit_at_each_characters_start_time() -> None:
    marks = character_marks(list("Hi, mom 42."), [i * 0.05 for i in range(11)], RATE, offset_s=1.0)
    assert marks == [
        (48000, "h"), (50400, "ɪ"), (52800, STOP), (55200, GAP), (57600, "m"), (60000, "o"),
        (62400, "m"), (64800, GAP), (72000, STOP),
    ]  # fmt: skip
    # 'th' is one sound, so one mark; a repeated letter continues the sound before it.
    assert character_marks(list("thin"), [0.0, 0.1, 0.2, 0.3], RATE) == [
        (0, "θ"), (9600, "ɪ"), (14400, "n")
    ]
    assert len(character_marks(list("all"), [0.0, 0.1, 0.2], RATE)) == 2


def test_word_marks_share_a_words_time_among_its_sounds_and_mark_pauses() -> None:
    marks = word_marks(["Bob,", "ran", "7"], [0.0, 0.5, 0.8], [0.3, 0.8, 1.0], RATE)
    assert marks == [
        (0, "b"), (4800, "o"), (9600, "b"), (14400, STOP),  # silence after the comma
        (24000, "ɹ"), (28800, "æ"), (33600, "n"),  # "7" follows at once: no pause mark
        (38400, GAP), (48000, GAP),  # a word without letters follows the audio
    ]  # fmt: skip


def test_timings_that_disagree_with_their_text_are_refused() -> None:
    with pytest.raises(ValueError, match="3 characters but 2 start times"):
        character_marks(["a", "b", "c"], [0.0, 0.1], RATE)
    with pytest.raises(ValueError, match="word timestamps disagree"):
        word_marks(["a"], [0.0], [], RATE)


def _poses(text: str, marks: list[tuple[int, str]]) -> tuple[list, list]:
    """The mouth for `text` spoken by the speech-like signal with `marks`, frame by frame."""
    audio = speak(text, RATE).audio
    chunk = SpeechChunk(audio=audio, phonemes=tuple(PhonemeMark(p, s) for p, s in marks))
    cutter = SlotCutter(0, RATE, FPS)
    slots = cutter.cut(chunk) + cutter.flush()
    return slots, [tracked.pose for tracked in iter_tracked(FPS, slots)]


@pytest.mark.parametrize("source", ["characters", "words"])
def test_on_the_face_the_lips_close_for_m_and_open_for_a(source: str) -> None:
    text = "mama papa"
    utterance = speak(text, RATE)
    if source == "characters":
        marks = character_marks([c.char for c in utterance.chars], [c.start_s for c in utterance.chars], RATE)
    else:
        words = utterance.words
        marks = word_marks([w.word for w in words], [w.start_s for w in words], [w.end_s for w in words], RATE)
    slots, poses = _poses(text, marks)
    frame_s = 1 / FPS

    def frames_in(char_index: int) -> list[int]:
        start, end = utterance.chars[char_index].start_s, utterance.chars[char_index].end_s
        return [i for i in range(len(slots)) if start <= (i + 0.5) * frame_s < end]

    for index, char in enumerate(text):
        frames = frames_in(index)
        if char in "mp":
            assert all(poses[f].open < 0 for f in frames), (char, [poses[f] for f in frames])
        elif char == "a":  # the vowel opens the mouth (smoothing softens one-frame sounds)
            assert max(poses[f].open for f in frames) > 0.1, (char, [poses[f] for f in frames])
    # Without the timings the same audio never presses the lips together: the marks did it.
    _, envelope_only = _poses(text, [])
    assert all(pose.open >= 0 for pose in envelope_only)
