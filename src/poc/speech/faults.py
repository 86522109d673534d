"""Vendor answers mapped onto the speech contract's errors, once for every API voice.

Each vendor module catches its SDK's exceptions and asks here what they mean, so the rule
"401/403 is permanent, 429 and 5xx are transient, Retry-After is honoured" is written once.
Messages name the vendor and the HTTP status, never the key or the request body.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

from poc.speech.base import (
    AuthRejected,
    InvalidSpeechRequest,
    SpeechError,
    Throttled,
    Unavailable,
)

MAX_DETAIL_CHARS = 160


def fault_for_status(
    vendor: str, status: int, headers: Mapping[str, str] | None = None, detail: str = ""
) -> Exception:
    """The contract error for an HTTP error answer from `vendor` (raise what it returns)."""
    said = _one_line(detail)
    suffix = f": {said}" if said else ""
    if status in (401, 403):
        return AuthRejected(f"{vendor} rejected the API key (HTTP {status}){suffix}")
    if status == 429:
        retry_after = parse_retry_after((headers or {}).get("retry-after") or _get(headers, "Retry-After"))
        return Throttled(f"{vendor} is throttling requests (HTTP 429){suffix}", retry_after)
    if status >= 500 or status in (408, 409):
        return Unavailable(f"{vendor} failed (HTTP {status}){suffix}")
    if 400 <= status < 500:
        return InvalidSpeechRequest(f"{vendor} refused the request (HTTP {status}){suffix}")
    return SpeechError(f"{vendor} answered HTTP {status}{suffix}")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent
    or unreadable. Never negative."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _get(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def _one_line(text: str) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= MAX_DETAIL_CHARS else flat[: MAX_DETAIL_CHARS - 1] + "…"
