"""Waiting for something a test cannot be told about directly: poll it until a deadline.

A test that sleeps for a fixed time and then asserts is either slow (the sleep is long enough for
a loaded machine) or flaky (it is not). These return as soon as the condition holds and fail
with a clear message when it never does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import anyio

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float, step: float = 0.2) -> T:
    """Call `condition` every `step` s until it returns something truthy, and return that.
    Raises AssertionError once `timeout` s have passed without it (it is tried one last time
    at the deadline, so a slow machine that gets there just in time still passes)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout:g} s")
        time.sleep(min(step, max(0.0, deadline - time.monotonic())))


def holds_for(condition: Callable[[], object], seconds: float, step: float = 0.2) -> None:
    """Check `condition` every `step` s for `seconds` s (a state that must last, such as a
    stream staying up through an outage). Raises AssertionError the first time it is false."""
    deadline = time.monotonic() + seconds
    while True:
        if not condition():
            raise AssertionError(f"condition stopped holding {seconds - (deadline - time.monotonic()):.1f} s in")
        if time.monotonic() >= deadline:
            return
        time.sleep(min(step, max(0.0, deadline - time.monotonic())))


async def eventually(condition: Callable[[], object], timeout: float = 5.0, step: float = 0.01) -> None:
    """The same from async code (asyncio or trio): polls without blocking the event loop."""
    deadline = anyio.current_time() + timeout
    while not condition():
        if anyio.current_time() >= deadline:
            raise AssertionError(f"condition not met within {timeout:g} s")
        await anyio.sleep(step)
