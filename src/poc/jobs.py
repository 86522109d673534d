"""A job: one accepted speech message and the promise to settle it exactly once.

The source adapter (RabbitMQ) creates a Job per delivery and waits on `settled`; the pipeline
settles it when the message has played, was interrupted or dropped, or can never play. Only
then does the adapter ack (or dead-letter, or requeue) the delivery, so nothing a user
publishes is lost if the service dies first.
"""

from __future__ import annotations

import enum
import itertools
import time
from typing import TYPE_CHECKING, Union

import anyio
import attrs

from poc.expiry import expiry_reason

if TYPE_CHECKING:
    from poc.messages import AudioMessage, TextMessage

    SpeechMessage = Union[TextMessage, AudioMessage]

_sequence = itertools.count(1)


class Outcome(enum.Enum):
    PLAYED = "played"
    INTERRUPTED = "interrupted"
    DROPPED = "dropped"  # removed by a `clear` control before it played
    DEAD_LETTERED = "dead_lettered"  # can never play; moved to the DLQ with the reason
    REQUEUED = "requeued"  # handed back to the broker unplayed (shutdown)


@attrs.define(eq=False)
class Job:
    message: SpeechMessage  # a TextMessage or AudioMessage from poc.messages
    id: str
    seq: int = attrs.field(factory=lambda: next(_sequence))
    received_at: float = attrs.field(factory=time.monotonic)
    outcome: Outcome | None = None
    reason: str = ""
    settled: anyio.Event = attrs.field(factory=anyio.Event)
    # Filled in as the job moves through the pipeline (for logs and metrics).
    speech_ready_at: float | None = None
    on_air_at: float | None = None

    def settle(self, outcome: Outcome, reason: str = "") -> bool:
        """Record the job's fate; the first call wins, later ones return False."""
        if self.outcome is not None:
            return False
        self.outcome = outcome
        self.reason = reason
        self.settled.set()
        return True

    @property
    def is_settled(self) -> bool:
        return self.outcome is not None

    def expiry_reason(self, now: float) -> str | None:
        """Why the message may no longer go on air at wall-clock `now`; None while it may."""
        return expiry_reason(getattr(self.message, "expires_at", None), now)
