"""Which writing system a text is in, and whether a single-language voice can read it.

Why: a piper voice speaks one language. Given text in another script it does not refuse: the
English voice spells 300 Chinese characters out as "Chinese letter, Chinese letter, ..." for
almost two minutes, at a 2 GB peak for that one sentence. A producer that forgot to name a voice
for its Chinese text is better told so in one line, with the message in the DLQ.

Only letters count (digits, punctuation, emoji and spaces are read alike in every script), and
the check refuses only text mostly in scripts the voice's language is not written in, so a
brand name or a quoted word from another script still plays. Languages not in the table below
are not checked.
"""

from __future__ import annotations

import collections
import unicodedata

from poc.speech.base import InvalidSpeechRequest

# The scripts a language is written in (the first word of a letter's Unicode name). Han and
# kana go together for Japanese, Han alone for Chinese.
_LATIN = frozenset({"LATIN"})
_SCRIPTS_BY_LANGUAGE: dict[str, frozenset[str]] = {
    **{code: _LATIN for code in (
        "en de fr es it pt nl pl cs sk sl hr ro hu fi sv da no nb nn is et lv lt tr "
        "ca eu gl cy ga sq sw vi id ms tl lb mt"
    ).split()},  # fmt: skip
    **{code: frozenset({"CYRILLIC"}) for code in ("ru", "uk", "be", "bg", "mk")},
    # Serbian and Kazakh are written in both (espeak-ng's Serbian rules are in Latin letters).
    **{code: frozenset({"CYRILLIC", "LATIN"}) for code in ("sr", "kk")},
    "el": frozenset({"GREEK"}),
    "ar": frozenset({"ARABIC"}),
    "fa": frozenset({"ARABIC"}),
    "ur": frozenset({"ARABIC"}),
    "he": frozenset({"HEBREW"}),
    "hi": frozenset({"DEVANAGARI"}),
    "ne": frozenset({"DEVANAGARI"}),
    "ka": frozenset({"GEORGIAN"}),
    "zh": frozenset({"CJK"}),
    "ja": frozenset({"CJK", "HIRAGANA", "KATAKANA"}),
    "ko": frozenset({"HANGUL", "CJK"}),
    "th": frozenset({"THAI"}),
}
# Refused when more than this share of the letters is in scripts the voice cannot read: high,
# so a sentence naming a few places in their own script ("Welcome to Київ and Харків") plays.
MOST = 0.75
MIN_LETTERS = 4  # too few letters to judge: a name, an initial


def scripts_of(text: str) -> collections.Counter[str]:
    """How many letters of each script the text holds ('LATIN', 'CJK', 'CYRILLIC', ...)."""
    counts: collections.Counter[str] = collections.Counter()
    for char in text:
        if unicodedata.category(char).startswith("L"):
            counts[_script(char)] += 1
    return counts


def require_readable(text: str, language: str, voice: str) -> None:
    """Raise InvalidSpeechRequest when most of the text's letters are in scripts that a voice
    speaking `language` (a normalised tag such as 'en-us') does not read."""
    readable = _readable_scripts(language)
    if readable is None:
        return
    counts = scripts_of(text)
    letters = sum(counts.values())
    if letters < MIN_LETTERS:
        return
    foreign = {script: n for script, n in counts.items() if script not in readable}
    if sum(foreign.values()) > MOST * letters:
        main = max(foreign, key=lambda script: foreign[script])
        main = "Han" if main == "CJK" else main.title()  # what people call Chinese characters
        raise InvalidSpeechRequest(
            f"the text is mostly in the {main} script, which voice {voice!r} ({language}) cannot "
            "read: name a voice (or a language) for it"
        )


def _readable_scripts(language: str) -> frozenset[str] | None:
    tag = language.lower().replace("_", "-")
    if tag in _SCRIPTS_BY_LANGUAGE:
        return _SCRIPTS_BY_LANGUAGE[tag]
    return _SCRIPTS_BY_LANGUAGE.get(tag.split("-", 1)[0])


def _script(char: str) -> str:
    # NFKC first: fullwidth "Ａ" and styled "𝐇" (social media's bold text) are read as A and H.
    plain = unicodedata.normalize("NFKC", char)[:1] or char
    name = unicodedata.name(plain, "")
    # The first word of the name is the script: "LATIN SMALL LETTER A", "CYRILLIC ...",
    # "CJK UNIFIED IDEOGRAPH-4F60", "HIRAGANA LETTER A", "HANGUL SYLLABLE GA".
    return name.split(" ", 1)[0] if name else "UNKNOWN"
