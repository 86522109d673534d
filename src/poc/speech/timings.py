"""Vendor text timings (characters or words with times) turned into mouth marks.

ElevenLabs says when each character of the text is spoken, Cartesia when each word is; the face
wants phoneme marks like piper's (face/visemes.py maps espeak/IPA symbols to mouth poses). Text
is not phonemes, but the mouth only needs the shape class of each sound, and spelling predicts
that well enough for the lips: m/b/p close them, f/v touch the teeth, "oo" rounds, "ee" spreads.
So letters and common digraphs map to one representative IPA symbol each that visemes.py knows.

- Spaces become ' ' and punctuation '.': not sounds, so the audio decides (the mouth closes in a
  pause). Words without letters (digits, symbols: "42" is spoken "forty-two") also get ' ', so
  their mouth follows the audio instead of a shape guessed from nothing.
- Letters outside the table (other scripts) pass through as themselves: visemes.py gives any
  letter it does not know a medium opening, which is right far more often than a closed mouth.
- Accented Latin letters count as their base letter ("é" is an "e").

Marks come out as (position, phoneme) pairs, the position in samples at the stream rate since the
utterance began; speech/stream_resample.py's PcmChunker puts them into the chunks they belong to.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

# Two letters that make one sound, checked before single letters.
_DIGRAPHS = {
    "th": "θ",
    "sh": "ʃ",
    "ch": "ʃ",
    "zh": "ʒ",
    "ph": "f",
    "wh": "w",
    "ng": "ŋ",
    "ck": "k",
    "qu": "k",
    "gh": "ɡ",
    "oo": "u",
    "ee": "i",
    "ea": "i",
    "ou": "aʊ",
    "ow": "aʊ",
    "oa": "o",
    "ai": "eɪ",
    "ay": "eɪ",
    "oi": "ɔɪ",
    "oy": "ɔɪ",
    "au": "ɔ",
    "aw": "ɔ",
}
_LETTERS = {
    "a": "æ",
    "b": "b",
    "c": "k",
    "d": "d",
    "e": "ɛ",
    "f": "f",
    "g": "ɡ",
    "h": "h",
    "i": "ɪ",
    "j": "ʒ",
    "k": "k",
    "l": "l",
    "m": "m",
    "n": "n",
    "o": "o",
    "p": "p",
    "q": "k",
    "r": "ɹ",
    "s": "s",
    "t": "t",
    "u": "ʌ",
    "v": "v",
    "w": "w",
    "x": "k",
    "y": "i",
    "z": "z",
    "ß": "s",
}
GAP = " "  # a space between words: no shape, the audio decides
STOP = "."  # punctuation: no shape, the audio decides


def base_letter(char: str) -> str:
    """'é' -> 'e', 'Ä' -> 'a'; other characters lower-cased as they are."""
    lowered = char.lower()
    decomposed = unicodedata.normalize("NFKD", lowered)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return stripped if len(stripped) == 1 else lowered


def spell(word: str) -> list[str]:
    """The phoneme symbols of `word`'s letters, digraphs merged ('thumb' -> θ ʌ m b).

    Characters that are not letters are skipped; a word with no letters gives [].
    """
    letters = [base_letter(c) for c in word if c.isalpha()]
    out: list[str] = []
    i = 0
    while i < len(letters):
        pair = "".join(letters[i : i + 2])
        if len(pair) == 2 and pair in _DIGRAPHS:
            out.append(_DIGRAPHS[pair])
            i += 2
            continue
        out.append(_LETTERS.get(letters[i], letters[i]))
        i += 1
    return out


def character_marks(
    characters: Sequence[str],
    start_times_s: Sequence[float],
    sample_rate: int,
    offset_s: float = 0.0,
) -> list[tuple[int, str]]:
    """Marks for per-character timings (ElevenLabs alignment).

    Each character (or digraph starting at it) gives a mark at its start time; a character that
    continues the same sound as the mark before it ('ll', the 'h' of 'th') gives none. Runs of
    digits and symbols give one GAP mark. `offset_s` is added to every time (for timings given
    relative to a chunk rather than to the utterance).
    """
    if len(characters) != len(start_times_s):
        raise ValueError(
            f"{len(characters)} characters but {len(start_times_s)} start times in the alignment"
        )
    marks: list[tuple[int, str]] = []
    last = None
    i = 0
    while i < len(characters):
        char = characters[i]
        position = max(0, round((start_times_s[i] + offset_s) * sample_rate))
        step = 1
        if char.isalpha():
            pair = base_letter(char) + (base_letter(characters[i + 1]) if i + 1 < len(characters) else "")
            if len(pair) == 2 and pair in _DIGRAPHS:
                symbol, step = _DIGRAPHS[pair], 2
            else:
                symbol = "".join(spell(char)) or GAP
        elif char.isspace():
            symbol = GAP
        elif unicodedata.category(char).startswith("P"):
            symbol = STOP
        else:
            symbol = GAP  # digits, symbols: spoken, but spelling says nothing about the mouth
        if symbol != last:
            marks.append((position, symbol))
            last = symbol
        i += step
    return marks


def word_marks(
    words: Sequence[str],
    start_times_s: Sequence[float],
    end_times_s: Sequence[float],
    sample_rate: int,
    offset_s: float = 0.0,
) -> list[tuple[int, str]]:
    """Marks for per-word timings (Cartesia word timestamps).

    A word's sounds share its time evenly (a word is short: the error is a few frames at most);
    after the word, a GAP mark (STOP if the word ends in punctuation) at its end time when
    silence follows. A word without letters is one GAP mark over its whole time.
    """
    if not len(words) == len(start_times_s) == len(end_times_s):
        raise ValueError(
            f"word timestamps disagree: {len(words)} words, {len(start_times_s)} starts, "
            f"{len(end_times_s)} ends"
        )
    marks: list[tuple[int, str]] = []
    for index, word in enumerate(words):
        start = start_times_s[index] + offset_s
        end = max(start, end_times_s[index] + offset_s)
        sounds = spell(word) or [GAP]
        share = (end - start) / len(sounds)
        for k, symbol in enumerate(sounds):
            marks.append((max(0, round((start + k * share) * sample_rate)), symbol))
        following = start_times_s[index + 1] + offset_s if index + 1 < len(words) else None
        if following is None or following > end:
            stripped = word.rstrip()
            ends_in_punctuation = bool(stripped) and unicodedata.category(stripped[-1]).startswith("P")
            marks.append((max(0, round(end * sample_rate)), STOP if ends_in_punctuation else GAP))
    return marks
