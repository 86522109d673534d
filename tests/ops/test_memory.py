"""Freed heap memory goes back to the system on a timer, without blocking the event loop."""

import sys
import threading
from pathlib import Path

import anyio
import pytest

from poc.ops.memory import release_freed_memory, trim_heap


def resident_anonymous_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/self/status")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_trim_gives_pages_freed_in_the_middle_of_the_heap_back():
    # 100 kB blocks stay below glibc's mmap threshold, so they live in the heap; freeing every
    # other one leaves free pages between used ones, which glibc alone never returns
    blocks = [bytearray(b"x" * 100_000) for _ in range(400)]
    del blocks[::2]
    before = resident_anonymous_kib()
    assert trim_heap() is True
    assert resident_anonymous_kib() < before - 10 * 1024  # about 20 MB were freed
    del blocks


@pytest.mark.anyio
async def test_trims_again_and_again_in_a_worker_thread():
    calls: list[bool] = []

    def trim() -> bool:
        calls.append(threading.current_thread() is not threading.main_thread())
        if len(calls) == 3:
            anyio.from_thread.run_sync(scope.cancel)  # trim runs in a worker thread
        return True

    with anyio.fail_after(5):
        with anyio.CancelScope() as scope:
            await release_freed_memory(interval=0.01, trim=trim)
    assert calls == [True, True, True]
