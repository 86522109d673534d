"""The job queue: where each accepted job is, from accepted until settled.

A job is *waiting* (accepted, not taken yet), then *preparing* (the speech stage took it; its
speech and faces are being made), then on air (the compositor started it), then settled. A
re-plan puts the preparing jobs back at the head of the waiting ones, in their order.

The compositor reports `started` and `settled` (app.py hands it these two methods), so the
queue also writes each message's on-air and outcome log lines and metrics, and tells the stages
to drop what they kept for a settled job (its speech, a vendor's video file).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from typing import Callable

import anyio

from poc.jobs import Job, Outcome
from poc.metrics import Metrics

log = logging.getLogger(__name__)

RECHECK_S = 0.1  # how often a waiting job re-checks the ahead budget (frames play meanwhile)


class JobQueue:
    """Accepted jobs in play order. Used from the event loop only."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._waiting: deque[Job] = deque()  # accepted, not taken by the speech stage yet
        self._preparing: list[Job] = []  # taken, not on air yet (in order)
        self._wake = anyio.Event()
        self._forget: list[Callable[[Job], None]] = []

    def has_pending(self) -> bool:
        """Some accepted job is not on air yet (the statechart's guard)."""
        return bool(self._waiting or self._preparing)

    @property
    def jobs(self) -> list[Job]:
        """Every job not on air yet, in play order."""
        return [*self._preparing, *self._waiting]

    def add(self, job: Job, *, first: bool = False) -> None:
        """Queue a job at the end, or ahead of every waiting job (`first`)."""
        if first:
            self._waiting.appendleft(job)
        else:
            self._waiting.append(job)
        self.wake()

    def wake(self) -> None:
        """Make `take` look again (a job arrived, or the stages restart)."""
        self._wake.set()

    async def take(self, has_room: Callable[[], bool]) -> Job:
        """The next unsettled waiting job, once `has_room()` says the ahead budget allows it;
        it is then preparing."""
        while True:
            while self._waiting and self._waiting[0].is_settled:
                self._waiting.popleft()
            if self._waiting and has_room():
                job = self._waiting.popleft()
                self._preparing.append(job)
                return job
            self._wake = anyio.Event()
            with anyio.move_on_after(RECHECK_S if self._waiting else math.inf):
                await self._wake.wait()

    def take_back(self) -> None:
        """Preparing jobs not settled go back to the head of the queue, in their order."""
        back = [job for job in self._preparing if not job.is_settled]
        self._preparing.clear()
        self._waiting.extendleft(reversed(back))

    def take_all(self) -> list[Job]:
        """Empty the queue; returns every job that was in it, in play order."""
        jobs = self.jobs
        self._preparing.clear()
        self._waiting.clear()
        return jobs

    def when_settled(self, forget: Callable[[Job], None]) -> None:
        """Call `forget(job)` once a job is settled (a stage drops what it kept for it)."""
        self._forget.append(forget)

    def settle(self, job: Job, outcome: Outcome, reason: str = "") -> bool:
        """Settle a job not on air; False if it already was."""
        self._not_preparing(job)
        if not job.settle(outcome, reason):
            return False
        self.settled(job)
        return True

    # -- the compositor's callbacks (on the event loop, during a tick) ---------------------------

    def started(self, job: Job, frame: int) -> None:
        """The job went on air at `frame`."""
        self._not_preparing(job)
        delay = (job.on_air_at or time.monotonic()) - job.received_at
        self._metrics.message_on_air(delay)
        log.info("message %s: on air at frame %d, %.2f s after it was received", job.id, frame, delay)

    def settled(self, job: Job) -> None:
        """The job was settled (by the compositor or by `settle`)."""
        if job.outcome is not None:
            self._metrics.message_settled(job.outcome.value)
        for forget in self._forget:
            forget(job)
        self._not_preparing(job)
        played = ""
        if job.on_air_at is not None:
            played = f" after {time.monotonic() - job.on_air_at:.1f} s on air"
        reason = f": {job.reason}" if job.reason else ""
        # A dead-lettered message is one the user published and will not hear: worth a warning.
        level = logging.WARNING if job.outcome is Outcome.DEAD_LETTERED else logging.INFO
        log.log(level, "message %s: %s%s%s", job.id, job.outcome.value if job.outcome else "?", played, reason)

    def _not_preparing(self, job: Job) -> None:
        if job in self._preparing:
            self._preparing.remove(job)
