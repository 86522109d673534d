"""A message that opens with punctuation or an emoji is spoken, not refused: what comes before
the first words travels with them (or, if it is bare punctuation, is dropped), while text with
nothing to say at all is still refused with the same clear reason."""

from __future__ import annotations

import pytest

from poc.speech.base import InvalidSpeechRequest
from poc.speech.piper import PiperProvider
from poc.speech.resilient import ResilientSpeech
from poc.speech.sentences import MAX_SENTENCE_CHARS, require_speakable, split_sentences


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("... Hello there.", ["Hello there."]),
        ("!!! Hello there. Bye.", ["Hello there.", "Bye."]),
        ("\u2026\n\u00bf?\nHello", ["Hello"]),
        ("\U0001f44b\nHello there", ["\U0001f44b Hello there"]),
        ("\U0001f44b\n...\n\u2764\ufe0f\nHi. Bye.", ["\U0001f44b \u2764\ufe0f Hi.", "Bye."]),
        ("\u200b\n-- Hi", ["-- Hi"]),  # a dash on the same line as the words stays with them
    ],
)
def test_what_comes_before_the_first_words_joins_them(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences
    assert require_speakable(text) == sentences


def test_after_the_first_words_an_emoji_joins_the_sentence_before_and_bare_punctuation_goes() -> None:
    assert split_sentences("... Hi.\n\U0001f44b\nBye. !!!") == ["Hi. \U0001f44b", "Bye."]


@pytest.mark.parametrize("text", ["... !?", "\U0001f44b", "\U0001f44b\n...", "\u2026\n!!!", "\U0001f44b " * 200])
def test_text_with_nothing_to_say_at_all_is_still_refused_whole(text: str) -> None:
    assert len(split_sentences(text)) == 1  # kept as one piece, not dropped or scattered
    with pytest.raises(InvalidSpeechRequest, match=r"nothing to speak \(no letters or digits\)"):
        require_speakable(text)


def test_a_long_first_sentence_after_a_leading_emoji_is_still_cut() -> None:
    text = "\U0001f44b\n" + " ".join(["word"] * 200)
    pieces = split_sentences(text)
    assert pieces[0].startswith("\U0001f44b word")
    assert all(len(piece) <= MAX_SENTENCE_CHARS + 2 for piece in pieces)
    assert " ".join(pieces).split() == text.split()


@pytest.mark.parametrize("text", ["... Hello there.", "\U0001f44b\nHello there", "!!!\n\u2026 Hello there."])
def test_the_real_voice_speaks_a_message_that_opens_with_punctuation_or_an_emoji(
    piper_44k: PiperProvider, text: str
) -> None:
    for voice in (piper_44k, ResilientSpeech([piper_44k], retries=0)):
        chunks = list(voice.synthesize_stream(text))
        assert len(chunks) == 1 and len(chunks[0].audio) > 0.3 * 44100


def test_the_real_voice_still_refuses_text_with_nothing_to_say(piper_44k: PiperProvider) -> None:
    for text in ("... !?", "\U0001f44b\n..."):
        with pytest.raises(InvalidSpeechRequest, match="nothing to speak"):
            piper_44k.synthesize_stream(text)
