"""Text is cut where a listener hears a sentence end, and never loses words."""

from __future__ import annotations

import numpy as np
import pytest

from poc.speech.base import InvalidSpeechRequest, PhonemeMark, SpeechChunk
from poc.speech.sentences import (
    MAX_SENTENCE_CHARS,
    join_chunks,
    language_matches,
    require_speakable,
    split_sentences,
)


def _words(texts: list[str] | str) -> list[str]:
    return (" ".join(texts) if isinstance(texts, list) else texts).split()


def test_sentence_ends_split_and_keep_every_word() -> None:
    text = "Hello there. How are you? I am fine! Well\u2026 maybe not."
    sentences = split_sentences(text)
    assert sentences == ["Hello there.", "How are you?", "I am fine!", "Well\u2026", "maybe not."]
    assert _words(sentences) == _words(text)


def test_abbreviations_initials_and_decimals_stay_inside_a_sentence() -> None:
    text = (
        "Dr. Smith met Mrs. Jones at 3.5 p.m. today, e.g. for tea. "
        "J. R. Tolkien wrote it, i.e. the book. It costs 2.50 dollars."
    )
    assert split_sentences(text) == [
        "Dr. Smith met Mrs. Jones at 3.5 p.m. today, e.g. for tea.",
        "J. R. Tolkien wrote it, i.e. the book.",
        "It costs 2.50 dollars.",
    ]


def test_line_breaks_end_sentences_and_blank_lines_vanish() -> None:
    assert split_sentences("First line\n\n  second line  \r\nthird") == [
        "First line",
        "second line",
        "third",
    ]


def test_closing_quotes_stay_with_their_sentence() -> None:
    assert split_sentences('He said "stop." Then he left.') == ['He said "stop."', "Then he left."]


def test_punctuation_only_pieces_after_a_sentence_are_dropped() -> None:
    # bare punctuation carries no words, and piper would read the "!!!" out as "exclamation"
    assert split_sentences("Wait for it. ... !!! Done.") == ["Wait for it.", "Done."]


def test_long_sentences_are_cut_at_commas_first() -> None:
    clause = "this clause keeps going for a while without any end in sight"
    text = ", ".join([clause] * 12) + "."
    pieces = split_sentences(text)
    assert len(pieces) > 1
    assert all(len(piece) <= MAX_SENTENCE_CHARS for piece in pieces)
    assert all(piece.endswith((",", ".")) for piece in pieces)  # cut at the commas
    assert _words(pieces) == _words(text)


def test_long_sentences_without_commas_are_cut_at_spaces_then_anywhere() -> None:
    text = " ".join(["word"] * 200)
    pieces = split_sentences(text)
    assert all(len(piece) <= MAX_SENTENCE_CHARS for piece in pieces)
    assert _words(pieces) == _words(text)
    unbroken = "x" * 700
    assert split_sentences(unbroken) == ["x" * 300, "x" * 300, "x" * 100]


def test_text_with_nothing_to_say_is_a_permanent_error() -> None:
    assert split_sentences("   \n ") == []
    for text in ("", "  ", "... !?"):
        with pytest.raises(InvalidSpeechRequest, match="nothing to speak"):
            require_speakable(text)
    assert require_speakable("Hi. 42.") == ["Hi.", "42."]


def test_language_tags_match_however_written() -> None:
    assert language_matches("en", "en-us")
    assert language_matches("en_US", "en-us")
    assert language_matches("EN-us", "en_US")
    assert not language_matches("en-GB", "en-us")
    assert not language_matches("de", "en-us")


def test_join_chunks_concatenates_audio_and_shifts_marks() -> None:
    first = SpeechChunk(np.arange(5, dtype=np.int16), (PhonemeMark(0, "a"), PhonemeMark(3, "b")))
    second = SpeechChunk(np.arange(4, dtype=np.int16), (PhonemeMark(0, "c"),))
    joined = join_chunks([first, second])
    assert joined.audio.dtype == np.int16
    assert joined.audio.tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3]
    assert joined.phonemes == (PhonemeMark(0, "a"), PhonemeMark(3, "b"), PhonemeMark(5, "c"))
    empty = join_chunks([])
    assert len(empty.audio) == 0 and empty.audio.dtype == np.int16
