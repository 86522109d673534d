"""Logging set-up: one line per event, and secrets masked in every record.

A secret is masked where it stands as a token: the stream-key segment of a URL, the value of a
`key=` / `"password": "..."` field, a word of its own. It is never masked inside another word:
a stream key `acc` must not turn "accepted" into "***epted". Authorization header values
(`Bearer ...`, `Basic ...`) are masked whatever they hold, since a vendor's header may carry an
encoding of a key rather than the key itself.
"""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar
from typing import Iterable
from urllib.parse import quote

MASK = "***"

# `Authorization: Bearer x`, `authorization="Basic x"`, `'Authorization': 'Token x'`, a bare
# `Bearer x`: group 1 keeps the name and scheme, the credential after it is masked.
_AUTHORIZATION = re.compile(
    r"""(?ix)
    (
      \b(?:proxy-)?authorization\b ["']? \s* [:=] \s* ["']? (?:(?:bearer|basic|token)\s+)?
      | \bbearer\s+
    )
    [^\s"',;}\]]+
    """
)
_WORD_CHAR = re.compile(r"\w")


class Redactor:
    """Masks the given secrets (and Authorization values) in text. Guarantees: every occurrence
    of a secret that is not part of a longer word is replaced by ***; a secret inside a longer
    word (letters, digits, underscores on the side where the secret itself ends in one) is left,
    because there it is a fragment of ordinary text, not the secret."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        variants: set[str] = set()
        for secret in secrets:
            if secret:
                variants.add(secret)
                variants.add(quote(secret, safe=""))  # as it appears inside a URL
        # Longest first: a regex alternation takes the first alternative that matches here.
        ordered = sorted(variants, key=len, reverse=True)
        self._secrets = re.compile("|".join(_as_token(s) for s in ordered)) if ordered else None

    def __call__(self, text: str) -> str:
        if self._secrets is not None:
            text = self._secrets.sub(MASK, text)
        return _AUTHORIZATION.sub(lambda m: m.group(1) + MASK, text)


def _as_token(secret: str) -> str:
    """A pattern for `secret` not glued to a word: a side that ends in a word character must
    not touch another one (a side ending in punctuation already marks a token edge)."""
    left = r"(?<!\w)" if _WORD_CHAR.match(secret[0]) else ""
    right = r"(?!\w)" if _WORD_CHAR.match(secret[-1]) else ""
    return left + re.escape(secret) + right


class RedactSecrets(logging.Filter):
    """Masks secrets (password, stream key, API keys) in the formatted message and traceback."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = set(secrets)
        self.redact = Redactor(self.secrets)

    def add(self, secrets: Iterable[str]) -> None:
        self.secrets |= set(secrets)
        self.redact = Redactor(self.secrets)  # swapped whole: a line being logged keeps the old one

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


# Kept at warning and above: the broker client's reconnect tracebacks say nothing new, and the
# HTTP clients (httpx; httpx2 under the OpenAI SDK) log every request at info: each poll of a
# face API job (one a second, minutes long), with result links that are pre-signed storage URLs.
NOISY_LOGGERS = ("aiormq", "aio_pika", "asyncio", "httpx", "httpcore", "httpx2", "httpcore2")


def configure_logging(level: str, secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class StationPrefix(logging.Filter):
    """Puts `[station] ` before the message of every line logged on a station's behalf (its
    tasks and the worker threads they start), so one log can be read per station."""

    def __init__(self, current: ContextVar[str | None]) -> None:
        super().__init__()
        self.current = current

    def filter(self, record: logging.LogRecord) -> bool:
        name = self.current.get()
        if name and not getattr(record, "station_tagged", False):
            record.msg, record.args = f"[{name}] {record.getMessage()}", None
            record.station_tagged = True
        return True


def show_station(current: ContextVar[str | None]) -> None:
    """From now on every handler of the root logger tags lines with the station they come from.
    Added first, so the secrets filter after it sees (and masks) the whole line."""
    for handler in logging.getLogger().handlers:
        handler.filters.insert(0, StationPrefix(current))


def add_secrets(secrets: Iterable[str]) -> None:
    """Mask these too from now on (a station added by SIGHUP brings its own stream key)."""
    for handler in logging.getLogger().handlers:
        for found in handler.filters:
            if isinstance(found, RedactSecrets):
                found.add(secrets)
