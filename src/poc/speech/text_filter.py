"""What a voice should say of a text written for the eye: Markdown, links and emoji left out.

Why: more and more messages come from LLMs, whose text carries Markdown. A voice reads the
markup aloud: piper speaks "**Great** deal: [click here](https://shop.example.com/x?id=3) now."
for 9.5 s, spelling the URL out ("h t t p s colon slash slash..."), where "Great deal: click here
now." takes 1.7 s. `speakable_text` keeps the words and drops the rest:

- emphasis (`**x**`, `__x__`, `*x*`, `_x_`, `~~x~~`) and inline code keep their words: a word in
  backticks is usually a name the sentence needs ("run `poc send`"); stars between Chinese,
  Japanese or Korean letters are emphasis too ("这是**重要**的": those scripts put no spaces);
- a code fence's marker lines go, its lines stay: whether they are code or prose cannot be told,
  and a message that is only a fenced block would otherwise say nothing at all;
- heading `#`s, list bullets and block quotes' `>` go; a heading or a list item ends as a
  sentence (a full stop is added), so it is not said in one breath with the next line. A list's
  numbers stay ("1. Preheat the oven" is read "One. Preheat the oven."): a reader sees them, they
  carry the order, and a line that opens with a date ("5. Dezember ...") keeps its day;
- horizontal rules and a table's separator row go; a table row is said cell by cell;
- HTML tags go (`<br>`, `<p>` and other block tags end the line);
- character references (`&amp;`, `&#39;`, `&euro;`) are the characters they stand for: text
  copied from a web page or a shop's feed carries them;
- a link is said by its text, an image not at all (the stream shows no picture, so its
  description would name something nobody sees);
- a bare URL is said as its host without "www." ("shop.example.com"): the part a viewer can
  remember and type; its path and query are noise read aloud;
- emoji go: voices read them by name ("party popper");
- a backslash escape (`\\$`, `\\_`, `\\*`) keeps its character and loses its backslash, which a
  voice reads out ("backslash").

It is conservative: markup is recognised only where Markdown puts it (emphasis wrapping words,
markers at a line's start, known HTML tags), so "5 * 3 = 15", "snake_case_name", "C# and F#",
"#1 seller", "$19.99" and a lone "*" pass unchanged. Text without markup is returned as it is,
and the result is a fixed point: filtering it again changes nothing.
"""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

# Inline markup, matched within one line. Contents exclude the marker character itself, so each
# search ends at the next marker (linear time on a hostile line of markers); nested markup
# ("**bold _and_ italic**") is undone over the passes of `speakable_text`.
_INLINE_CODE = re.compile(r"(?<!`)(`+)(?!`)[ ]?([^`\n]+?)[ ]?(?<!`)\1(?!`)")
# Stars may sit between letters of the scripts written without spaces between words (Chinese,
# Japanese; Korean's particles): "这是**重要**的". Elsewhere a letter beside them makes them
# something else ("2*3*4", "un*believable").
_NO_SPACE_LETTERS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_NOT_BESIDE_STARS = rf"[^\W{_NO_SPACE_LETTERS}]|\*"  # a letter of a spaced script, or a star
_STRONG_EMPHASIS = re.compile(
    rf"(?<!{_NOT_BESIDE_STARS})\*\*\*(?=[^\s*])([^*\n]+?)(?<=[^\s*])\*\*\*(?!{_NOT_BESIDE_STARS})"
)
_STRONG_STARS = re.compile(
    rf"(?<!{_NOT_BESIDE_STARS})\*\*(?=[^\s*])([^*\n]+?)(?<=[^\s*])\*\*(?!{_NOT_BESIDE_STARS})"
)
# Underscores close only where a word ends: "__init__.py" and "_config_.yml" are file names.
_STRONG_UNDERSCORES = re.compile(r"(?<![\w_])__(?=[^\s_])([^_\n]+?)(?<=[^\s_])__(?![\w_]|\.\w)")
_EMPHASIS_STAR = re.compile(
    rf"(?<!{_NOT_BESIDE_STARS})\*(?=[^\s*])([^*\n]+?)(?<=[^\s*])\*(?!{_NOT_BESIDE_STARS})"
)
_EMPHASIS_UNDERSCORE = re.compile(r"(?<![\w_])_(?=[^\s_])([^_\n]+?)(?<=[^\s_])_(?![\w_]|\.\w)")
_STRIKE = re.compile(r"(?<!~)~~(?=[^\s~])([^~\n]+?)(?<=[^\s~])~~(?!~)")
# [text](url "title"); the URL may hold one level of parentheses (Wikipedia's do).
_URL_IN_PARENS = r"\((?:<[^<>\n]*>|(?:[^()\s]|\([^()\s]*\))*)(?:\s+\"[^\"\n]*\")?\)"
_IMAGE = re.compile(r"!\[[^\[\]\n]*\]" + _URL_IN_PARENS + r"[ \t]*")
_LINK = re.compile(r"\[([^\[\]\n]*)\]" + _URL_IN_PARENS)
# The domain's first label holds no dot, so only one split is tried ("<a@b.b.b...": not n²).
_AUTOLINK = re.compile(r"<((?:https?|ftp)://[^\s<>]+|[^\s<>@]+@[^\s<>@.]+\.[^\s<>@]+)>")
_URL = re.compile(r"\b(?:(?:https?|ftp)://|www\.)[^\s<>]+", re.IGNORECASE)
_URL_TRAILER = ".,;:!?'\")]\u201d\u2019"  # punctuation that ends the sentence, not the URL
_WWW = re.compile(r"^(?:www\d*\.)+", re.IGNORECASE)

# Known HTML tags only: "x<y and y>z" is not a tag. Attributes must look like name="value".
_ATTRIBUTES = r"""(?:\s+[\w:-]+\s*=\s*(?:"[^"<>]*"|'[^'<>]*'))*\s*/?"""
_BLOCK_TAGS = "br|hr|p|div|li|ul|ol|tr|table|blockquote|pre|h[1-6]"
_INLINE_TAGS = "b|i|u|s|em|strong|span|a|code|small|sup|sub|mark|del|ins|kbd|font|img|td|th|thead|tbody"
_BLOCK_TAG = re.compile(rf"</?(?:{_BLOCK_TAGS}){_ATTRIBUTES}>", re.IGNORECASE)
_INLINE_TAG = re.compile(rf"</?(?:{_INLINE_TAGS}){_ATTRIBUTES}>", re.IGNORECASE)

# Emoji: pictographs, emoticons, dingbats, flags and keycaps, with what binds them into one
# picture (skin tones, variation selector 16, joiners between two pictographs, tags). A joiner
# elsewhere is left alone: Indic and Arabic scripts need it.
_PICTOGRAPH = (
    "\U0001f000-\U0001f0ff"  # mahjong tiles, dominoes, playing cards
    "\U0001f170-\U0001faff"  # lettered buttons, flags, pictographs, emoticons, skin tones ...
    "\u2600-\u266c\u2670-\u2767"  # symbols, dingbats (not music's flat, natural, sharp)
    "\u2794-\u27bf"  # more dingbats (not the ornamental brackets and circled digits before)
    "\u231a\u231b\u2328\u23cf\u23e9-\u23f3\u23f8-\u23fa"
    "\u25aa\u25ab\u25b6\u25c0\u2b1b\u2b1c\u2b50\u2b55"
)
_EMOJI_PART = rf"[{_PICTOGRAPH}](?:[\ufe0f\u20e3\U000e0020-\U000e007f]|\u200d[{_PICTOGRAPH}])*"
_EMOJI = re.compile(rf"(?:{_EMOJI_PART})(?:[ \t]*(?:{_EMOJI_PART}))*[ \t]*")
# Marks that turn the character before into an emoji ("©️", the keycap "1️⃣"): they say nothing.
_PRESENTATION = re.compile("\ufe0f\u20e3?|\u20e3")

# Block markup at a line's start.
_FENCE = re.compile(r"^[ \t]{0,3}(?:`{3,}[^`]*|~{3,}.*)$")
_RULE = re.compile(r"^[ \t]*([-*_=])(?:[ \t]*\1){2,}[ \t]*$")
_CELL_RULE = r"[ \t]*:?-+:?[ \t]*"
_TABLE_SEPARATOR = re.compile(rf"^[ \t]*\|?{_CELL_RULE}(?:\|{_CELL_RULE})*\|?[ \t]*$")
# [1]: https://example.com (a reference link's target; "[Note]: see below" is not one)
_LINK_DEFINITION = re.compile(r"^[ \t]{0,3}\[[^\[\]\n]+\]:[ \t]+<?(?:(?:https?|ftp)://|www\.|/)", re.IGNORECASE)
# Quotes' ">", bullets and a heading's "#"s, as many as a line opens with ("> - item").
# A ">" before a digit is "more than" (">50 items"), not a quote.
_MARKERS = re.compile(r"(?:[ \t]*(?:>(?!\d)[ \t]?|[-*+\u2022][ \t]+|#{1,6}(?:[ \t]+|$)))+")
_NUMBER = re.compile(r"[ \t]*\d{1,2}[.)][ \t]+")
_HEADING_CLOSE = re.compile(r"[ \t]+#+[ \t]*$")
# What already ends a heading or item, here and in scripts with their own marks: CJK's full
# stops and fullwidth ones, Devanagari's danda, Arabic's and Urdu's question mark and full stop,
# Armenian's and Ethiopic's full stops, so none gets a "." of ours after it.
_SENTENCE_END = ".!?\u2026:;,\u3002\uff0e\uff01\uff1f\uff61\uff1a\uff1b\uff0c\u3001\u0964\u0965\u061f\u06d4\u060c\u061b\u0589\u1362"

MAX_PASSES = 8  # nesting deeper than this is not worth more work; see speakable_text


def speakable_text(text: str) -> str:
    """`text` as a voice should say it: Markdown, HTML tags, URLs and emoji left out.

    Filtered again until a pass changes nothing (the second, for most texts), so markup nested
    in markup (a list in a quote, bold in a link) goes too and the result is a fixed point:
    filtering it again changes nothing. MAX_PASSES bounds the work on deeper nesting."""
    for _ in range(MAX_PASSES):
        filtered = _one_pass(text)
        if filtered == text:
            break
        text = filtered
    return text


# A character reference with its ";" ("&amp;", "&#8217;", "&#x2019;"): text copied from a web page
# or a shop's product feed carries them, and a voice reads "Ben &amp; Jerry's" as "and amp".
# Without the ";", "AT&T" and "Q&A" stay as they are.
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


def _decoded(text: str) -> str:
    """Character references as the characters they stand for, however often escaped
    ("&amp;amp;" too): each round shortens the text, so it ends."""
    while True:
        decoded = _ENTITY.sub(lambda reference: html.unescape(reference.group()), text)
        if decoded == text:
            return text
        text = decoded


# A Markdown backslash escape: a backslash before ASCII punctuation shows that character as it
# is. LLMs write "\$19.99" (so that a renderer does not start a formula) and "snake\_case"; a
# voice said "backslash" before each. The character stays; the backslash goes.
_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")


def _one_pass(text: str) -> str:
    text = _ESCAPE.sub(r"\1", _decoded(text))
    lines = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
        spoken = _line(body)
        if spoken is not None:
            lines.append(spoken + line[len(body) :])
    return "".join(lines)


def _line(line: str) -> str | None:
    """One line as it should be said; None to leave the line out."""
    if _FENCE.match(line) or _RULE.match(line) or _LINK_DEFINITION.match(line):
        return None
    if "|" in line and "-" in line and _TABLE_SEPARATOR.match(line):
        return None
    stripped = line.strip()
    if len(stripped) > 1 and stripped.startswith("|") and stripped.endswith("|"):
        cells = [_inline(cell).strip() for cell in stripped[1:-1].split("|")]
        return _as_sentence(", ".join(cell for cell in cells if cell))
    body, item = _without_markers(line)
    number = _NUMBER.match(body)
    if number:  # the number stays (see the module's docstring), its item is a sentence
        return _as_sentence(f"{number.group().strip()} {_inline(body[number.end() :]).strip()}".strip())
    spoken = _inline(body)
    return _as_sentence(spoken.strip()) if item else spoken


def _without_markers(line: str) -> tuple[str, bool]:
    """The line without its quote, bullet and heading markers; True when it was a list item
    or a heading (said as a sentence of its own)."""
    markers = _MARKERS.match(line)
    if not markers:
        return line, False
    body = line[markers.end() :]
    if "#" in markers.group():
        body = _HEADING_CLOSE.sub("", body)
    return body, markers.group().strip(" \t>") != ""


def _inline(text: str) -> str:
    text = _BLOCK_TAG.sub("\n", text)
    text = _INLINE_TAG.sub("", text)
    text = _INLINE_CODE.sub(r"\2", text)
    text = _IMAGE.sub(_cut, text)
    text = _LINK.sub(r"\1", text)
    text = _AUTOLINK.sub(r"\1", text)
    text = _URL.sub(_host, text)
    for pattern in (_STRONG_EMPHASIS, _STRONG_STARS, _STRONG_UNDERSCORES, _EMPHASIS_STAR, _EMPHASIS_UNDERSCORE, _STRIKE):
        text = pattern.sub(r"\1", text)
    return _PRESENTATION.sub("", _EMOJI.sub(_cut, text))


def _host(match: re.Match[str]) -> str:
    """A URL → its host without "www." ("shop.example.com"), keeping the punctuation after it."""
    url = match.group()
    end = len(url)
    opened, closed = url.count("("), url.count(")")  # counted once: a URL may be all ")"
    while end and url[end - 1] in _URL_TRAILER:
        if url[end - 1] == ")":
            if opened >= closed:
                break  # its own: "https://en.wikipedia.org/wiki/Mercury_(planet)"
            closed -= 1
        end -= 1
    url, after = url[:end], url[end:]
    if not re.match(r"[a-z]+://", url, re.IGNORECASE):
        url = "http://" + url
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:  # an unreadable URL is not worth reading out either
        host = ""
    return _WWW.sub("", host) + after


def _cut(match: re.Match[str]) -> str:
    """Nothing for an emoji run or an image (matched with the spaces after it), but one space
    where it stood between two words: "Great 🎉 deal" and "Great🎉 deal" become "Great deal"."""
    text = match.string
    before = text[match.start() - 1] if match.start() > 0 else " "
    after = text[match.end()] if match.end() < len(text) else " "
    glued_on_both_sides = not before.isspace() and not after.isspace()
    spaces_after = match.group() != match.group().rstrip(" \t")
    return " " if glued_on_both_sides or (not before.isspace() and spaces_after) else ""


def _as_sentence(text: str) -> str:
    """A heading, item or table row ends as a sentence (unless it has nothing to say)."""
    if text and any(char.isalnum() for char in text) and text[-1] not in _SENTENCE_END:
        return text + "."
    return text
