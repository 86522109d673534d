"""Opt-in memory probe for the soak (`scripts/soak.py --memory-log FILE`), loaded into the service.

Python imports `sitecustomize` at start-up from any folder on PYTHONPATH, so the soak puts this
folder there only when asked, and the service itself carries no debug code. A daemon thread
appends one JSON line every POC_MEMPROBE_SECONDS to POC_MEMPROBE_LOG, separating the ways RSS
can grow: anonymous vs file-backed pages (/proc/self/smaps_rollup), glibc's own view (mallinfo2:
bytes in use vs free-but-held in the arenas, and mmapped blocks), Python's heap
(sys.getallocatedblocks) and, once a minute, which Python object types grew in number.
With POC_MEMPROBE_TRIM=1 it also calls glibc's malloc_trim(0) after each sample and records
what that gave back and how long it took: the test of whether growth is free-but-held memory.
From the end of the soak's 2-minute warm-up on, once a minute it also appends a per-mapping
snapshot of /proc/self/smaps (a line with "smaps"), so `smaps_diff.py` can tell which mapping
grows: the first snapshot is the warm-up end, the last one is within a minute of the end.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]  # fmt: skip


def _find_mallinfo2() -> Callable[[], _MallInfo2] | None:
    """glibc's mallinfo2 (2.33+); None elsewhere."""
    try:
        call = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    call.restype = _MallInfo2
    return call


_MALLINFO2 = _find_mallinfo2()


def _mallinfo() -> dict[str, int]:
    """glibc's totals over all arenas; empty without mallinfo2."""
    if _MALLINFO2 is None:
        return {}
    info = _MALLINFO2()
    return {"heap": info.arena, "in_use": info.uordblks, "free_held": info.fordblks,
            "mmapped": info.hblkhd, "mmapped_blocks": info.hblks}  # fmt: skip


def _smaps() -> dict[str, int]:
    """KiB from /proc/self/smaps_rollup: total RSS and its anonymous / file-backed parts."""
    wanted = {"Rss:": "rss_kib", "Pss_Anon:": "anon_kib", "Pss_File:": "file_kib"}
    values = {}
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            key, _, rest = line.partition(" ")
            if key in wanted:
                values[wanted[key]] = int(rest.split()[0])
    return values


def _mappings() -> list[list[object]]:
    """/proc/self/smaps per mapping: [start, end, perms, name, Rss, Anonymous, AnonHugePages]
    (KiB; start and end as hex strings, name "" for an anonymous mapping)."""
    rows: list[list[object]] = []
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head, _, rest = line.partition(" ")
            if "-" in head and not head.endswith(":"):  # "start-end perms offset dev inode [name]"
                fields = line.split(None, 5)
                start, end = head.split("-")
                rows.append([start, end, fields[1], fields[5].strip() if len(fields) > 5 else "",
                             0, 0, 0])  # fmt: skip
            elif head in ("Rss:", "Anonymous:", "AnonHugePages:") and rows:
                rows[-1][{"Rss:": 4, "Anonymous:": 5, "AnonHugePages:": 6}[head]] = int(rest.split()[0])
    return rows


def _type_counts() -> Counter[str]:
    return Counter(type(o).__name__ for o in gc.get_objects())


def _run(path: str, every: float) -> None:
    start = time.monotonic()
    baseline: Counter[str] | None = None
    last_types = 0.0
    last_smaps = 0.0
    while True:
        time.sleep(every)
        now = time.monotonic() - start
        record: dict[str, object] = {"t": round(now, 1), **_smaps(), **_mallinfo(),
                                     "py_blocks": sys.getallocatedblocks(),
                                     "threads": threading.active_count()}  # fmt: skip
        if now - last_types >= 60:  # walking every object is not free: once a minute
            last_types = now
            counts = _type_counts()
            if baseline is None and now >= 120:  # the soak's warm-up
                baseline = counts
            if baseline is not None:
                grown = (counts - baseline).most_common(8)
                record["types_grown"] = dict(grown)
        if os.environ.get("POC_MEMPROBE_TRIM") == "1":
            began = time.perf_counter()
            ctypes.CDLL(None).malloc_trim(0)
            record["trim_ms"] = round((time.perf_counter() - began) * 1000, 2)
            record["anon_after_trim_kib"] = _smaps()["anon_kib"]
        with open(path, "a") as log:
            log.write(json.dumps(record) + "\n")
            if now >= 120 and now - last_smaps >= 60:  # from the soak's warm-up end, once a minute
                last_smaps = now
                log.write(json.dumps({"t": round(now, 1), "smaps": _mappings()}) + "\n")


if os.environ.get("POC_MEMPROBE_LOG"):  # set only in the environment the soak gives the service
    threading.Thread(target=_run, name="memprobe", daemon=True,
                     args=(os.environ["POC_MEMPROBE_LOG"],
                           float(os.environ.get("POC_MEMPROBE_SECONDS", "10")))).start()  # fmt: skip
