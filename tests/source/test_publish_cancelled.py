"""A publish cut off by its caller's deadline (the studio gives each one 5 s) must not leave an
AMQP connection behind: a month of timed-out publishes would otherwise pile up connections on
the broker, each holding a socket here and a process there."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from poc.source.connection import AmqpSettings
from poc.source.publish import build_text, publish

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

BROKER_PORT = 5672
ESTABLISHED = "01"


def _open_broker_sockets() -> int:
    """This process's established TCP connections to the broker's port (read from /proc)."""
    own_inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            own_inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == BROKER_PORT and fields[3] == ESTABLISHED and fields[9] in own_inodes:
                count += 1
    return count


async def _wait_for_sockets(expected: int, within_s: float) -> int:
    with anyio.move_on_after(within_s):
        while _open_broker_sockets() != expected:
            await anyio.sleep(0.05)
    return _open_broker_sockets()


async def test_a_publish_cut_off_at_any_point_leaves_no_connection_open(
    settings: AmqpSettings, queue: str
) -> None:
    before = _open_broker_sockets()
    # Deadlines from "mid-connect" to "mid-publish" on a local broker.
    for deadline_ms in (1, 2, 3, 5, 8, 12, 20, 30, 50, 80):
        with anyio.move_on_after(deadline_ms / 1000):
            await publish(settings, build_text("cut off"), queue=queue)
    assert await _wait_for_sockets(before, within_s=5) == before


async def test_a_publish_that_finishes_leaves_no_connection_open(
    settings: AmqpSettings, queue: str
) -> None:
    before = _open_broker_sockets()
    await publish(settings, build_text("whole"), queue=queue)
    assert await _wait_for_sockets(before, within_s=5) == before
