"""Sentence-by-sentence speech: split text into sentences, join sentence chunks back.

Providers speak one sentence at a time so the first sentence can go on air while the rest is
still being synthesised; the time to first audio is then the cost of one sentence, not of the
whole message. The splitter is deliberately simple (punctuation and line breaks, a short list of
abbreviations that end in a dot): a wrong split only costs a slightly longer pause, a missed one
only delays the first audio. Sentences longer than `MAX_SENTENCE_CHARS` are cut again at the last
comma-like mark (else the last space) before the limit, for the same reason.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator

import numpy as np

from poc.speech.base import InvalidSpeechRequest, PhonemeMark, SpeechChunk

MAX_SENTENCE_CHARS = 300

# Words that end in a dot without ending the sentence (compared lower-case, without the dot).
# Dotted forms like "e.g.", "i.e.", "U.S.", "a.m." and single initials ("J.") are caught by
# `_DOTTED` below rather than listed here.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs etc approx dept est fig inc ltd co corp no vol mt ave "
    "rd blvd gen col capt lt sgt rev hon jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
_DOTTED = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]?\.?")

# A sentence end: terminal punctuation, any closing quotes/brackets, then whitespace.
_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*(?=\s)")
_CLAUSE_BREAK = re.compile(r"[,;:\u2013\u2014]\s")
# Where `cut_at_clause` may cut: after a comma-like mark or a dash standing between words.
_PIECE_BREAK = re.compile(r"[,;:\u2013\u2014]\s|\s-\s")
_SPEAKABLE = re.compile(r"\w")
# Unicode categories a voice says nothing for: punctuation, spaces, control and format marks.
_UNSAID = frozenset("Pc Pd Ps Pe Pi Pf Po Zs Zl Zp Cc Cf".split())


def split_sentences(text: str, max_chars: int = MAX_SENTENCE_CHARS) -> list[str]:
    """Split `text` into sentences to synthesise one by one.

    Line breaks always end a sentence; '.', '!', '?' and '…' end one when whitespace follows,
    except after a known abbreviation or an initial ("Dr. Smith", "e.g. this", "J. Doe").
    Pieces longer than `max_chars` are cut further. Pieces with nothing speakable are dropped
    when they are bare punctuation ("...", "!!!") and otherwise ("👋") merged into the sentence
    before them, or carried into the first one. Text with nothing speakable at all stays one
    piece (for `require_speakable` to refuse); blank text gives an empty list.
    """
    sentences: list[str] = []
    leading: list[str] = []  # unspeakable pieces before the first sentence with words
    for piece in _pieces(text, max_chars):
        if _SPEAKABLE.search(piece):
            # A voice would refuse a sentence of its own with no words, so what came before
            # the first words travels with them.
            before = [] if sentences else [p for p in leading if not _only_punctuation(p)]
            sentences.append(" ".join([*before, piece]))
        elif sentences:
            if not _only_punctuation(piece):  # piper reads a "!!!" after a full stop aloud
                sentences[-1] = f"{sentences[-1]} {piece}"
        else:
            leading.append(piece)
    if not sentences and leading:
        return [" ".join(leading)]
    return sentences


def _pieces(text: str, max_chars: int) -> Iterator[str]:
    for line in text.splitlines():
        for sentence in _split_line(line):
            yield from _cut_long(sentence, max_chars)


def _only_punctuation(piece: str) -> bool:
    """Nothing but punctuation, spaces and invisible marks ("...", "!!!", "--").

    Such a piece is dropped: piper reads a "!!!" standing after a full stop out as
    "exclamation", and adds nothing for "...". A symbol or emoji is kept: voices read some
    aloud ("👋" is "waving hand"), as they already do for one on the same line as words.
    """
    return all(unicodedata.category(char) in _UNSAID for char in piece)


def _split_line(line: str) -> list[str]:
    pieces: list[str] = []
    start = 0
    for match in _END.finditer(line):
        single_dot = match.group().rstrip("\"'\u201d\u2019)]") == "."
        if single_dot and _is_abbreviation(line[start : match.start()]):
            continue
        pieces.append(line[start : match.end()].strip())
        start = match.end()
    pieces.append(line[start:].strip())
    return [piece for piece in pieces if piece]


def _is_abbreviation(before_dot: str) -> bool:
    """True when the word just before a single '.' is an abbreviation, not a sentence end."""
    words = before_dot.split()
    if not words:
        return False
    word = words[-1].lstrip("\"'(\u201c\u2018[")
    if word.lower() in _ABBREVIATIONS:
        return True
    # "e.g" / "U.S" (the final dot is the match) or a single initial like "J" (but "I." is
    # the pronoun far more often than an initial).
    if word == "I":
        return False
    return bool(_DOTTED.fullmatch(word + ".")) and (len(word) == 1 or "." in word)


def _cut_long(sentence: str, max_chars: int) -> list[str]:
    pieces: list[str] = []
    rest = sentence
    while len(rest) > max_chars:
        window = rest[: max_chars + 1]
        cut = max((m.end() for m in _CLAUSE_BREAK.finditer(window)), default=0)
        if cut < max_chars // 3:  # a comma near the start would leave the problem in place
            space = window.rfind(" ")
            cut = space + 1 if space > 0 else max_chars
        pieces.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        pieces.append(rest)
    return pieces


def cut_at_clause(text: str, max_chars: int, min_chars: int) -> tuple[str, str]:
    """`text` as a head of about `max_chars` to speak now and the rest to speak after it.

    The cut falls after the last clause mark (, ; : or a dash) that leaves a head of at most
    `max_chars`, else at the last space before it; never inside a word, and never leaving
    either part shorter than `min_chars` or without a word (tiny pieces sound choppy, and a
    voice refuses one with nothing to say). When no cut fits under `max_chars`, the first
    allowed space after it; when none at all, (`text`, ""), as for text within `max_chars`.
    """
    text = text.strip()
    if len(text) <= max_chars:
        return text, ""
    max_chars = max(max_chars, min_chars)

    def allowed(cut: int) -> bool:
        head, rest = text[:cut].strip(), text[cut:].strip()
        return (
            len(head) >= min_chars
            and len(rest) >= min_chars
            and bool(_SPEAKABLE.search(head))
            and bool(_SPEAKABLE.search(rest))
        )

    clauses = [m.end() for m in _PIECE_BREAK.finditer(text)]
    spaces = [i + 1 for i, char in enumerate(text) if char.isspace()]
    for cuts in (clauses, spaces):
        fitting = [cut for cut in cuts if len(text[:cut].strip()) <= max_chars and allowed(cut)]
        if fitting:
            cut = fitting[-1]
            return text[:cut].strip(), text[cut:].strip()
    later = [cut for cut in spaces if allowed(cut)]
    if later:
        return text[: later[0]].strip(), text[later[0] :].strip()
    return text, ""


def require_speakable(text: str) -> list[str]:
    """The sentences of `text`; InvalidSpeechRequest when there is nothing to say at all."""
    sentences = split_sentences(text)
    if not any(_SPEAKABLE.search(sentence) for sentence in sentences):
        raise InvalidSpeechRequest("the text has nothing to speak (no letters or digits)")
    return sentences


def normalize_language(language: str) -> str:
    """'en_US' / 'EN-us' -> 'en-us', so language tags compare equal however they are written."""
    return language.strip().replace("_", "-").lower()


def language_matches(requested: str, spoken: str) -> bool:
    """'en', 'en-US' and 'en_US' all match a voice that speaks en-us; 'en-GB' does not."""
    wanted = normalize_language(requested)
    spoken = normalize_language(spoken)
    return wanted == spoken or wanted == spoken.split("-")[0]


def join_chunks(chunks: Iterable[SpeechChunk]) -> SpeechChunk:
    """One chunk holding every chunk's audio in order, phoneme marks shifted to match.

    This is `synthesize` for every provider: the concatenation of `synthesize_stream`.
    """
    audio: list[np.ndarray] = []
    marks: list[PhonemeMark] = []
    offset = 0
    for chunk in chunks:
        audio.append(chunk.audio)
        marks.extend(PhonemeMark(m.sample + offset, m.phoneme) for m in chunk.phonemes)
        offset += len(chunk.audio)
    joined = np.concatenate(audio) if audio else np.zeros(0, dtype=np.int16)
    return SpeechChunk(audio=joined.astype(np.int16, copy=False), phonemes=tuple(marks))
