"""What a message source needs from the pipeline, and what it reports about itself.

The RabbitMQ adapter only ever calls these methods (JobSink's three, and StreamSwitch's two for
the stream itself), so the pipeline and the service never learn that RabbitMQ exists and a test
(or another transport) can drive them the same way.
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


class StreamSwitch(Protocol):
    """Taking the whole stream off air and back: the `stop` and `start` control messages.

    The source pauses consuming speech before it calls stop_stream (so what is handed back
    stays in the queue) and resumes after start_stream. Both are idempotent.
    """

    async def stop_stream(self) -> int | None:
        """Go off air on purpose: cut the speech on air (with a blend), hand every held
        message back unplayed, then close the output cleanly. Returns how many messages were
        handed back, or None if the stream was already stopped (nothing done)."""
        ...

    async def start_stream(self) -> float | None:
        """Back on air: the output restarts at once. Returns the seconds until it was
        running, or None if the stream was not stopped (nothing done)."""
        ...


@attrs.frozen
class SourceStatus:
    """A snapshot for /health and logs."""

    connected: bool = False
    reconnects: int = 0  # successful reconnections after the first connect
    last_error: str = ""  # one line, never contains a password
