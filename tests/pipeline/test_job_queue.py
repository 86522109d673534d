"""The job queue keeps play order through re-plans, never hands out a settled job, waits for the
ahead budget, and reports each message's start and settlement exactly once."""

from __future__ import annotations

import logging

import anyio
import pytest

from poc.jobs import Job, Outcome
from poc.metrics import Metrics
from poc.pipeline import JobQueue

pytestmark = pytest.mark.anyio


def jobs(*names: str) -> list[Job]:
    return [Job(message=None, id=name) for name in names]


async def test_a_replan_puts_prepared_jobs_back_at_the_head_in_their_order() -> None:
    queue = JobQueue(Metrics())
    a, b, c, d = jobs("a", "b", "c", "d")
    for job in (a, b, c):
        queue.add(job)
    assert await queue.take(lambda: True) is a
    assert await queue.take(lambda: True) is b
    queue.add(d, first=True)  # an urgent message goes ahead of everything still waiting
    assert queue.jobs == [a, b, d, c]
    queue.settle(b, Outcome.DEAD_LETTERED, "bad voice")
    queue.take_back()
    assert queue.jobs == [a, d, c]  # b settled while prepared: not taken back
    assert [await queue.take(lambda: True) for _ in range(3)] == [a, d, c]
    assert queue.has_pending()  # taken, not on air yet
    assert queue.take_all() == [a, d, c] and not queue.has_pending()


async def test_take_skips_settled_jobs_and_waits_for_the_ahead_budget() -> None:
    queue = JobQueue(Metrics())
    first, second = jobs("first", "second")
    queue.add(first)
    queue.add(second)
    first.settle(Outcome.DROPPED)
    room = False
    taken: list[Job] = []

    async def take() -> None:
        taken.append(await queue.take(lambda: room))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(take)
            await anyio.wait_all_tasks_blocked()
            assert taken == []  # no room in the budget: it waits
            room = True  # frames played: it looks again by itself
    assert taken == [second]


async def test_the_compositor_s_reports_are_counted_logged_and_forgotten_once(caplog) -> None:
    caplog.set_level(logging.INFO, logger="poc")
    metrics = Metrics()
    queue = JobQueue(metrics)
    forgotten: list[str] = []
    queue.when_settled(lambda job: forgotten.append(job.id))
    (job,) = jobs("m-1")
    queue.add(job)
    assert await queue.take(lambda: True) is job
    queue.started(job, 12)
    assert not queue.has_pending()  # on air now
    assert job.settle(Outcome.PLAYED)
    queue.settled(job)
    assert not queue.settle(job, Outcome.DROPPED, "too late")  # settled once only
    assert forgotten == ["m-1"]
    assert metrics.registry.get_sample_value("poc_messages_total", {"outcome": "played"}) == 1
    assert metrics.registry.get_sample_value("poc_messages_total", {"outcome": "dropped"}) is None
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("message m-1: on air at frame 12, ") for line in lines)
    assert "message m-1: played" in " ".join(lines)


async def test_a_dead_lettered_message_is_a_warning_with_its_reason(caplog) -> None:
    """A message the user published and will never hear is worth a warning, not an info line
    among hundreds of "played" ones; the RabbitMQ adapter adds no second line for it."""
    queue = JobQueue(Metrics())
    played, dead = jobs("played", "dead")
    caplog.set_level(logging.INFO, logger="poc")
    queue.settle(played, Outcome.PLAYED)
    queue.settle(dead, Outcome.DEAD_LETTERED, "unknown voice 'x'")
    levels = {r.getMessage(): r.levelno for r in caplog.records if r.name.startswith("poc.")}
    assert levels == {"message played: played": logging.INFO, "message dead: dead_lettered: unknown voice 'x'": logging.WARNING}
