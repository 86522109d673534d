"""Which memory mapping of the service grew: compare two /proc/self/smaps snapshots of a soak.

    .venv/bin/python scripts/memprobe/smaps_diff.py MEMORY_LOG [--top N]

MEMORY_LOG is what `scripts/soak.py --memory-log` wrote; the probe adds a per-mapping snapshot
once a minute from the end of the warm-up. This compares the first snapshot with the last one:
mappings are matched by start address (one that is not in the first snapshot counts as new, one
that is gone as gone), and the Rss / Anonymous / AnonHugePages deltas are summed by kind:

  [heap]          glibc's main arena (brk heap)
  thread arena    anonymous mapping starting on a 64 MiB boundary: a glibc arena of another
                  thread (its reserved, not yet usable rest is a separate ---p mapping)
  thread stack    anonymous rw mapping right above a ---p guard page, at most 8 MiB
  anonymous mmap  every other anonymous mapping: glibc's mmapped blocks (>= the mmap threshold),
                  Python's obmalloc arenas (256 KiB in 3.11; adjacent ones merge into one
                  mapping), onnxruntime / numpy / ffmpeg buffers allocated that way
  file NAME       a file-backed mapping, by file name (libonnxruntime..., python, ...)
  [stack] etc.    the kernel's own names

Adjacent anonymous mappings with the same permissions merge, so a mapping can change its start
and show up as one gone and one new; the per-kind sums do not depend on that.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

ARENA_ALIGN = 64 << 20  # glibc's HEAP_MAX_SIZE on 64-bit: every non-main arena heap is aligned to it
STACK_MAX_KIB = 8 << 10  # default pthread stack (RLIMIT_STACK 8 MiB)


def snapshots(log: Path) -> list[tuple[float, list[list]]]:
    found = []
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if "smaps" in record:
            found.append((record["t"], record["smaps"]))
    return found


def kinds(rows: list[list]) -> dict[str, str]:
    """start address -> kind, for every mapping of one snapshot."""
    result = {}
    previous = None
    for row in rows:
        start, end, perms, name = row[0], row[1], row[2], row[3]
        begin, size_kib = int(start, 16), (int(end, 16) - int(start, 16)) >> 10
        if name and not name.startswith("["):
            kind = "file " + name.rsplit("/", 1)[-1]
        elif name:
            kind = name
        elif begin % ARENA_ALIGN == 0:
            kind = "thread arena"
        elif (perms.startswith("rw") and size_kib <= STACK_MAX_KIB and previous is not None
              and previous[2].startswith("---") and not previous[3] and previous[1] == start):
            kind = "thread stack"
        else:
            kind = "anonymous mmap"
        result[start] = kind
        previous = row
    return result


def mib(kib: int) -> str:
    return f"{kib / 1024:+.1f}" if kib else "0"


def compare(first: list[list], last: list[list], top: int) -> str:
    before, after = {r[0]: r for r in first}, {r[0]: r for r in last}
    kind_before, kind_after = kinds(first), kinds(last)
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0])  # rss0 rss1 anon0 anon1 thp0 thp1
    for rows, kind_of, column in ((first, kind_before, 0), (last, kind_after, 1)):
        for row in rows:
            totals = by_kind[kind_of[row[0]]]
            totals[column] += row[4]
            totals[2 + column] += row[5]
            totals[4 + column] += row[6]
    lines = ["| kind | Rss first → last (MiB) | Rss delta | Anonymous delta | AnonHugePages delta |",
             "|---|---|---|---|---|"]
    for kind, t in sorted(by_kind.items(), key=lambda item: item[1][0] - item[1][1]):
        if t[0] or t[1]:
            lines.append(f"| {kind} | {t[0] / 1024:.1f} → {t[1] / 1024:.1f} | {mib(t[1] - t[0])} "
                         f"| {mib(t[3] - t[2])} | {mib(t[5] - t[4])} |")  # fmt: skip
    total0, total1 = sum(r[4] for r in first), sum(r[4] for r in last)
    lines.append(f"| **all** | {total0 / 1024:.1f} → {total1 / 1024:.1f} | {mib(total1 - total0)} "
                 f"| {mib(sum(r[5] for r in last) - sum(r[5] for r in first))} "
                 f"| {mib(sum(r[6] for r in last) - sum(r[6] for r in first))} |")  # fmt: skip
    changes = []
    for start in before.keys() | after.keys():
        old, new = before.get(start), after.get(start)
        row = new or old
        size = (int(row[1], 16) - int(row[0], 16)) >> 10
        state = "new" if old is None else "gone" if new is None else ""
        delta_rss = (new[4] if new else 0) - (old[4] if old else 0)
        delta_anon = (new[5] if new else 0) - (old[5] if old else 0)
        kind = (kind_after if new else kind_before)[start]
        changes.append((delta_rss, delta_anon, start, row[2], size, kind, state,
                        old[4] if old else 0, new[4] if new else 0))  # fmt: skip
    changes.sort(key=lambda c: -abs(c[0]))
    lines += ["", f"Top {top} mappings by |Rss delta| (matched by start address):", "",
              "| start | perms | size (MiB) | kind | Rss first → last (MiB) | Rss delta | Anonymous delta | |",
              "|---|---|---|---|---|---|---|---|"]
    for delta_rss, delta_anon, start, perms, size, kind, state, rss0, rss1 in changes[:top]:
        lines.append(f"| {start} | {perms} | {size / 1024:.1f} | {kind} | {rss0 / 1024:.1f} → {rss1 / 1024:.1f} "
                     f"| {mib(delta_rss)} | {mib(delta_anon)} | {state} |")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", type=Path)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    found = snapshots(args.log)
    if len(found) < 2:
        print(f"{args.log}: {len(found)} smaps snapshot(s), need two (run the soak past its warm-up + 1 min)")
        return 1
    (t0, first), (t1, last) = found[0], found[-1]
    print(f"smaps snapshots at {t0:.0f} s and {t1:.0f} s ({(t1 - t0) / 60:.1f} min apart), "
          f"{len(first)} and {len(last)} mappings\n")
    print(compare(first, last, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
