"""What a message source needs from the pipeline, and what it reports about itself.

The RabbitMQ adapter only ever calls these three methods, so the pipeline never learns that
RabbitMQ exists and a test (or another transport) can drive the pipeline the same way.
"""

from __future__ import annotations

from typing import Protocol

import attrs

from poc.jobs import Job


class JobSink(Protocol):
    def submit(self, job: Job, *, urgent: bool = False) -> None:
        """Take a job without blocking; `urgent` interrupts current speech and plays this next."""
        ...

    def interrupt(self) -> None:
        """Stop the current speech (blend back to idle); queued jobs stay queued."""
        ...

    def clear(self) -> int:
        """Settle every held, unplayed job as DROPPED and interrupt the current one.

        Returns how many jobs were dropped.
        """
        ...


@attrs.frozen
class SourceStatus:
    """A snapshot for /health and logs."""

    connected: bool = False
    reconnects: int = 0  # successful reconnections after the first connect
    last_error: str = ""  # one line, never contains a password
