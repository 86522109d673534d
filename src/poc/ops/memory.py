"""Handing freed heap memory back to the system, so a 24/7 process's RSS stays flat.

Why (measured with `scripts/soak.py --memory-log`, docs/reliability.md): after warm-up the bytes
the service has allocated stay flat (glibc's in-use bytes, which include onnxruntime's arena, and
Python's blocks), yet RSS kept growing by 1.5-2.8 MiB/min. The service frees and reallocates
frames, audio and ONNX tensors from several threads (clock, ffmpeg writer, TTS, face worker,
anyio's pool), so the free space inside glibc's arenas keeps moving, and a page once touched
stays resident: by itself glibc gives back only the free top of a heap. `malloc_trim(0)` also
releases the whole free pages inside every arena (madvise). Called every 10 s it took 1-3 ms
and kept RSS flat over 10 minutes, though not over 30: the rest was onnxruntime's arena in
piper's session, now switched off (speech/piper.py, docs/reliability.md). The trim stays: it still
returns what the other threads free. MALLOC_ARENA_MAX=2 alone did not stop the growth.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable

import anyio

log = logging.getLogger(__name__)

TRIM_SECONDS = 10.0  # what the soak measured; each trim took 1-3 ms, in a worker thread


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim from the C library the interpreter already uses; None elsewhere."""
    try:
        function = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # musl, macOS: no malloc_trim
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


_MALLOC_TRIM = _find_malloc_trim()


def trim_heap() -> bool:
    """Give every whole free page of every malloc arena back now; True if any was released."""
    return bool(_MALLOC_TRIM(0)) if _MALLOC_TRIM is not None else False


async def release_freed_memory(interval: float = TRIM_SECONDS,
                               trim: Callable[[], bool] = trim_heap) -> None:  # fmt: skip
    """Forever: every `interval` seconds, trim in a worker thread (the clock never waits on
    it). Returns at once where the C library cannot trim."""
    if trim is trim_heap and _MALLOC_TRIM is None:
        log.debug("no malloc_trim in this C library: freed memory stays with the allocator")
        return
    while True:
        await anyio.sleep(interval)
        await anyio.to_thread.run_sync(trim)
