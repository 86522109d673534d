"""Which station the work in hand is for: set in each station's tasks by poc.host, copied by
anyio into the worker threads they start (and by the ffmpeg writer into its threads), read where
a name helps an operator: log lines, the shared face engine's per-station counters."""

from __future__ import annotations

from contextvars import ContextVar

CURRENT_STATION: ContextVar[str | None] = ContextVar("poc_station", default=None)
