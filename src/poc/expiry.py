"""When a message stops being worth saying: its optional `expires_at`.

Why: a shop host's "the flash sale ends in five minutes" or an answer to a viewer's chat question
is worth nothing, or worse, an hour late, and a backlog builds up whenever the stream was stopped,
the RTMP server was away or the queue was long. A producer may give such a message an
`expires_at`; one that has not gone on air by then is dead-lettered with the reason instead of
played. poc looks when the speech stage takes the message and again when its first frame is due
(a message prepared ahead can wait through an RTMP outage), so an expired message never airs.

It is wall-clock time, the producer's and ours: hosts that keep their clocks in sync (NTP) are
assumed. RabbitMQ's own per-message TTL (the AMQP `expiration` property) is no substitute: the
broker drops such a message without a trace while it waits in the queue.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from typing import Any

# Seconds since 1970 this large are a date past the year 5000: the producer sent milliseconds
# (JavaScript's Date.now()), which read as seconds would never expire.
_MAX_EPOCH_SECONDS = 1e11
_WHAT = "must be a time: an ISO 8601 string with a timezone (2026-12-01T18:00:00Z) or seconds since 1970"


def epoch_seconds(value: Any) -> float | None:
    """`expires_at` as a message carries it, as seconds since 1970 (UTC); None if absent.
    Raises ValueError with a fragment that completes "'expires_at' ..." for anything else."""
    if value is None:
        return None
    if isinstance(value, bool):  # JSON true is no time (and Python's bool is an int)
        raise ValueError(_WHAT)
    if isinstance(value, (int, float)):
        return _checked_number(float(value))
    if isinstance(value, str):
        # Blank is "no expiry", as a blank voice is "the default voice".
        return _parsed_iso(value.strip()) if value.strip() else None
    raise ValueError(_WHAT)


def _checked_number(seconds: float) -> float:
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(_WHAT)
    if seconds >= _MAX_EPOCH_SECONDS:
        raise ValueError(f"is {seconds:.0f}: milliseconds? It must be seconds since 1970")
    return seconds


def _parsed_iso(text: str) -> float:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(_WHAT) from None
    if moment.tzinfo is None:
        # Whose local time? The producer's and ours may differ: refuse rather than guess.
        raise ValueError(f"has no timezone ({text[:40]!r}): add Z for UTC or an offset like +01:00")
    return moment.timestamp()


def expires_in(seconds: float, now: float | None = None) -> str:
    """The `expires_at` (ISO 8601, UTC) of a message that is worth playing for `seconds` from
    `now` (default: this moment)."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"expires in {seconds:g} s: it must be a positive number of seconds")
    moment = (time.time() if now is None else now) + seconds
    return _iso(moment)


def _iso(moment: float) -> str:
    when = datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="seconds")
    return when.replace("+00:00", "Z")


def expiry_reason(expires_at: float | None, now: float) -> str | None:
    """Why a message that expires at `expires_at` may no longer play at `now` (both seconds since
    1970); None while it may."""
    if expires_at is None or now < expires_at:
        return None
    return f"expired: not on air by its expires_at {_iso(expires_at)} ({now - expires_at:.1f} s late)"
