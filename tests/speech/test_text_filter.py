"""Text written for the eye is spoken as its words: Markdown, URLs' paths and emoji are left out
before any voice sees the text (TTS_TEXT_FILTER), while ordinary text passes unchanged."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poc.config import ConfigError, Settings, load_settings
from poc.speech.base import InvalidSpeechRequest
from poc.speech.factory import create_speech
from poc.speech.piper import PiperProvider
from poc.speech.resilient import ResilientSpeech
from poc.speech.text_filter import speakable_text

CLEAN = "Great deal. Click here now."
MARKDOWN = "**Great** deal: [click here](https://shop.example.com/x?id=3) now."


def settings_with(**env: str) -> Settings:
    return load_settings(environ=env, env_file=Path("/nonexistent/.env"), check_files=False)


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        (MARKDOWN, "Great deal: click here now."),
        ("__bold__, *it*, _it_, ***both***, ~~gone~~ and `poc send`", "bold, it, it, both, gone and poc send"),
        ("**bold _and_ italic**", "bold and italic"),
        ("# Big news\nWe won.", "Big news.\nWe won."),
        ("## Closed heading ##", "Closed heading."),
        ("- one\n* two\n+ three!\n\u2022 four", "one.\ntwo.\nthree!\nfour."),
        ("1. Preheat\n2) Bake\n3. \U0001f389", "1. Preheat.\n2) Bake.\n3."),  # the numbers stay: a reader sees them
        ("> quoted **text**\n> > - deeper", "quoted text\ndeeper."),
        ("Intro\n---\n***\n___\nTitle\n=====", "Intro\nTitle\n"),
        ("| Item | Price |\n|---|:---:|\n| Tea | $3 |", "Item, Price.\nTea, $3."),
        ("Line<br>two<br/>three <b>bold</b> <a href=\"https://x.com\">link</a>", "Line\ntwo\nthree bold link"),
        ("![logo](https://x.com/logo.png) Hello", "Hello"),
        ("Visit https://www.shop.example.com/a?b=c.", "Visit shop.example.com."),
        ("See <https://docs.example.com/x> or www.example.org/page!", "See docs.example.com or example.org!"),
        ("(https://en.wikipedia.org/wiki/Mercury_(planet)) ok", "(en.wikipedia.org) ok"),
        ("Great \U0001f389 deal", "Great deal"),
        ("Great\U0001f389 deal\U0001f44d\U0001f3fd", "Great deal"),
        ("\U0001f468\u200d\U0001f469\u200d\U0001f467 family \U0001f1e9\U0001f1ea", "family "),
        ("Press 1\ufe0f\u20e3 \u00a9\ufe0f 2024", "Press 1 \u00a9 2024"),
        ("```python\nprint(1)\n```", "print(1)\n"),  # the fence goes, its lines stay
        ("[1]: https://example.com/ref\nText", "Text"),
    ],
)
def test_markup_is_left_out_and_the_words_stay(text: str, spoken: str) -> None:
    assert speakable_text(text) == spoken


@pytest.mark.parametrize(
    "text",
    [
        "5 * 3 = 15", "2*3*4", "snake_case_name", "my _snake_case_ var", "__init__.py", "_config_.yml", "I_O", "C# and F#",
        "#1 seller", "$19.99", "3 - 2", "-5 degrees", "e.g. this", "Dr. Smith", "Price* applies",
        "*Terms apply", "don't, it's", "x<y and y>z", "a <3", "~5 minutes", "[Note]: see below",
        "as noted [1][2]", "example.com", "C\u266f minor, B\u266d", "20\u00b0C", "\u00a9 2024 ACME\u2122", "Привет, мир", "नमस्\u200dते", "你好，世界", "مرحبا",
        "  indented\r\nwindows\n",
    ],
)  # fmt: skip
def test_ordinary_text_passes_unchanged(text: str) -> None:
    assert speakable_text(text) == text


# What the filter reads as markup, besides its characters: a line opening as a list item, a rule
# of dashes or equals signs, a URL. Text without any of it must come back as it went in. (A
# backslash is markup: before punctuation it is a Markdown escape.)
_MARKUP_CHARACTERS = "*_`#[]()<>|~&\\"
_NOT_EMOJI = st.characters(
    # Emoji are symbols (So); code points not yet assigned in their blocks are tomorrow's emoji.
    blacklist_categories=("Cs", "So", "Cn"),
    blacklist_characters=_MARKUP_CHARACTERS + "\ufe0f\u20e3\U0001f3fb\U0001f3fc\U0001f3fd\U0001f3fe\U0001f3ff",
)
_LINE_MARKUP = re.compile(r"^\s*(?:[-+\u2022]\s|\d{1,2}[.)]\s|([-=])(?:\s*\1){2,}\s*$)")


def _has_line_markup(text: str) -> bool:
    lowered = text.lower()
    return "://" in lowered or "www." in lowered or any(_LINE_MARKUP.match(line) for line in text.splitlines())


@settings(max_examples=300, deadline=None)
@given(st.text(_NOT_EMOJI, max_size=80).filter(lambda text: not _has_line_markup(text)))
def test_text_without_markup_comes_back_as_it_went_in(text: str) -> None:
    assert speakable_text(text) == text


_PIECES = list(_MARKUP_CHARACTERS + "$!-+=.:/ \n\t1aZ\u2022\U0001f389\ufe0f\u200d") + ["https://", "www.", "br"]
_MARKUPISH = st.lists(st.sampled_from(_PIECES), max_size=40).map("".join)


@settings(max_examples=500, deadline=None)
@given(st.one_of(_MARKUPISH, st.text(max_size=60)))
def test_filtering_twice_changes_nothing_more(text: str) -> None:
    once = speakable_text(text)
    assert speakable_text(once) == once


@pytest.mark.parametrize(
    "marker", ["**", "__", "*", "_", "~~", "`", "[", "](", "[a](", "<b ", '<b a="1"', "|-", "- ", "> ", "# "]
)
def test_a_line_of_markers_without_closers_is_no_trap(marker: str) -> None:
    # A hostile message of markers that never close must not hold the voice's thread: each
    # search ends at the next marker, so this is a fraction of a second (minutes if not).
    text = "a" + marker * 20_000 + "x"
    assert speakable_text(text).endswith("x")


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("这是**重要**的通知", "这是重要的通知"),
        ("今日は**特価**です", "今日は特価です"),
        ("오늘 **특가**입니다", "오늘 특가입니다"),
        ("这是*斜体*的，~~旧价~~新价", "这是斜体的，旧价新价"),
    ],
)
def test_emphasis_inside_text_written_without_spaces_is_left_out(text: str, spoken: str) -> None:
    # Chinese and Japanese put no space between words, so an LLM's bold sits between letters.
    assert speakable_text(text) == spoken


LONGEST_MESSAGE = 100_000  # the most MAX_TEXT_CHARS allows (config.py)


@pytest.mark.parametrize(
    "text",
    [
        "<a@" + "b." * (LONGEST_MESSAGE // 2),  # an e-mail autolink that never closes
        "http://a(" + ")" * LONGEST_MESSAGE,  # a URL's closing brackets, each weighed
    ],
    ids=["autolink", "url-brackets"],
)
def test_a_hostile_link_in_the_longest_message_is_no_trap(text: str) -> None:
    # Quadratic work here held the voice's thread for seconds (about a minute for the first).
    started = time.process_time()
    speakable_text(text)
    assert time.process_time() - started < 1.0


# --- through the voice -----------------------------------------------------------------------


def seconds(voice: ResilientSpeech, text: str) -> float:
    return len(voice.synthesize(text).audio) / 44100


def test_the_real_voice_says_the_markdown_sentence_about_as_long_as_the_clean_one(piper_44k: PiperProvider) -> None:
    voice = ResilientSpeech([piper_44k], retries=0, text_filter=speakable_text)
    clean, markdown = seconds(voice, CLEAN), seconds(voice, MARKDOWN)
    assert abs(markdown - clean) <= 0.3 * clean, (clean, markdown)
    unfiltered = ResilientSpeech([piper_44k], retries=0)
    assert seconds(unfiltered, MARKDOWN) > 2 * clean  # what it was: the URL spelt out


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("![logo](https://x.com/logo.png)", "nothing to speak once its markup and emoji are left out"),
        ("<br> \U0001f389\U0001f389", "nothing to speak once its markup and emoji are left out"),
        ("... !?", r"nothing to speak \(no letters or digits\)"),  # nothing even as written
    ],
)
def test_text_left_with_nothing_to_say_is_refused_not_played_as_silence(
    piper_44k: PiperProvider, text: str, reason: str
) -> None:
    voice = ResilientSpeech([piper_44k], retries=0, text_filter=speakable_text)
    with pytest.raises(InvalidSpeechRequest, match=reason):
        voice.synthesize_stream(text)  # refused before the first chunk: the message is dead-lettered


def test_the_setting_filters_by_default_and_none_speaks_the_text_as_it_comes(piper_44k: PiperProvider) -> None:
    default = create_speech(settings_with(TTS_SAMPLE_RATE="44100"))
    assert settings_with().tts_text_filter == "markdown"
    assert seconds(default, MARKDOWN) < 1.3 * seconds(default, CLEAN)
    raw = create_speech(settings_with(TTS_SAMPLE_RATE="44100", TTS_TEXT_FILTER=" None "))
    assert seconds(raw, MARKDOWN) > 2 * seconds(raw, CLEAN)


def test_a_bad_filter_name_stops_start_up_with_one_line_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as caught:
        settings_with(TTS_TEXT_FILTER="html")
    assert str(caught.value) == "TTS_TEXT_FILTER: must be one of markdown, none (got 'html')"


@pytest.mark.parametrize(
    "item", ["- 第一项。", "- 今日は特価です！", "- क्या यह सच है।", "- هل هذا صحيح؟", "- 好吗？"]
)
def test_an_item_ending_in_its_scripts_own_full_stop_gets_no_dot_of_ours(item: str) -> None:
    assert speakable_text(item) == item.removeprefix("- ")


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ("Ben &amp; Jerry&#39;s, now &euro;5 &ndash; today only", "Ben & Jerry's, now €5 – today only"),
        ("A&nbsp;deal &amp;amp; more", "A\xa0deal & more"),  # escaped twice by a feed
        ("&lt;b&gt;Bold&lt;/b&gt; news", "Bold news"),  # markup escaped as text is still markup
        ("AT&T and Q&A, &unknown; stays", "AT&T and Q&A, &unknown; stays"),
        (">50 items left", ">50 items left"),  # "more than", not a quote
        ("> quoted", "quoted"),
    ],
)
def test_character_references_and_more_than(written: str, said: str) -> None:
    assert speakable_text(written) == said


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("Only \\$19.99 today", "Only $19.99 today"),  # an LLM keeping a renderer out of math mode
        ("snake\\_case and 5 \\* 3", "snake_case and 5 * 3"),
        ("\\*not emphasis\\*, just stars", "not emphasis, just stars"),  # a voice says no stars
        ("a backslash: \\\\ and C:\\Users", "a backslash: \\ and C:\\Users"),  # before a letter it stays
    ],
)
def test_a_markdown_escape_keeps_its_character_without_the_backslash(text: str, spoken: str) -> None:
    assert speakable_text(text) == spoken


def test_an_escaped_price_is_read_as_a_price() -> None:
    """espeak-ng, the offline voices' phonemizer, said "backslash" before the price."""
    from poc.speech.local_text import sentences_to_say

    said = " ".join(sentences_to_say(speakable_text("Only \\$19.99 today."), "en_US", "piper"))
    assert said == "Only nineteen dollars and ninety-nine cents today."
