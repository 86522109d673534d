"""A one-language voice refuses text mostly in a script its language is not written in, with a
reason that says what to do; mixed text, names and unchecked languages still play."""

from __future__ import annotations

import pytest

from poc.speech.base import InvalidSpeechRequest
from poc.speech.piper import PiperProvider
from poc.speech.scripts import require_readable, scripts_of

CHINESE = "你好，欢迎来到我们的直播间，今天我们介绍新产品。"
RUSSIAN = "Добрый вечер и добро пожаловать на нашу трансляцию."


def test_letters_are_counted_by_script_and_styled_letters_as_their_plain_ones() -> None:
    assert scripts_of("Hi 你好 Привет 123 !? 👋") == {"LATIN": 2, "CJK": 2, "CYRILLIC": 6}
    assert scripts_of("ＡＢ 𝐇𝐞𝐥𝐥𝐨") == {"LATIN": 7}  # fullwidth and social media's bold text


@pytest.mark.parametrize(
    "text, language, script",
    [(CHINESE, "en-us", "Han"), (RUSSIAN, "en-gb", "Cyrillic"), ("Good evening to you all", "ru-ru", "Latin")],
)
def test_text_mostly_in_another_script_is_refused_naming_it(text: str, language: str, script: str) -> None:
    with pytest.raises(InvalidSpeechRequest, match=f"mostly in the {script} script.*name a voice"):
        require_readable(text, language, "joe")


@pytest.mark.parametrize(
    "text, language",
    [
        ("Today we present the new 华为 phone and the 小米 watch.", "en-us"),  # names in passing
        (CHINESE, "zh-cn"),
        ("今日はいい天気ですね。カタカナも。", "ja"),
        (RUSSIAN, "ru-ru"),
        ("Сербия and Србија", "sr"),
        ("Dobar dan, kako ste danas?", "sr-rs"),  # Serbian in Latin letters
        ("Welcome to Київ and Харків, Львів, Одеса", "en-us"),  # places in their own script
        ("你好", "en-us"),  # too few letters to judge: a name
        (CHINESE, "xx-unknown"),  # a language the table does not know is not checked
        ("Hello there!", "en_US"),
    ],
)
def test_text_a_voice_can_read_passes(text: str, language: str) -> None:
    require_readable(text, language, "joe")


def test_the_english_piper_voice_refuses_chinese_before_spelling_it_out(piper_44k: PiperProvider) -> None:
    with pytest.raises(InvalidSpeechRequest, match="mostly in the Han script, which voice .*joe"):
        piper_44k.synthesize_stream(CHINESE * 10)
