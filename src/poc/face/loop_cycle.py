"""Which joints to chain into one loop: the cycle over a clip's joints that plays the most frames.

A joint (s, e) lets playback leave the clip after frame e-1 and carry on at frame s, with s < e:
only backward joints are used, since a forward one only skips frames (the segment it cuts could
play straight through instead and meet the same next joint). A loop is a cycle of joints; after
one lands on s the clip plays forward to the leaving point e' of the next, a segment [s, e') that
must be at least `shortest` frames long (room for its cross-fade).

Playback only moves forward one frame at a time and only jumps backward, so a cycle plays every
frame from its lowest landing S to its highest leaving point E: it shows E - S distinct frames,
and that is what the search maximizes. With alike pairs (10, 100) and (90, 190): 10..189, jump
back to 90, 90..99, jump back to 10: 180 distinct frames where either joint alone gives 100.

How. (0) A joint that lands as low or lower, leaves as late or later and costs no more than
another can stand in for it anywhere in a cycle, so only the undominated ones are kept (running
minimums over an (N, N) grid: a few ms for 600 frames, whatever the number of joints; a 600-frame
clip keeps a few hundred of ~70,000). (1) Only the Pareto front (s down, e up) decides the span;
on it, the lowest landing reachable from a top joint is found by always taking the joint that
lands lowest (a lower landing can take every joint a higher one can). (2) Among cycles of that
span, the one with the fewest joints, then the smallest summed cost, is a shortest path down
from the top joint's landing to a joint landing on S (landings only ever need to go down),
O(P^2) numpy-vectorized over the P joints kept.

Two joints from one alike stretch, (12, 107) and (9, 103), chain for a few frames more than
either alone, at the price of a second cross-fade and a cycle that repeats most of itself:
`least_gain` asks several joints to beat the best single one by that many frames.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

_PER_JOINT = 1000.0  # path cost of a joint on top of its change (<= 1): fewest joints first, then least change


def longest_cycle(
    starts: Sequence[int], ends: Sequence[int], costs: Sequence[float], shortest: int, least_gain: int = 0
) -> list[int] | None:
    """Indices into the joints (starts[k], ends[k], costs[k] >= 0) in playing order, the one
    landing lowest first; the segment before each joint runs from the previous joint's landing
    to its own leaving point. Several joints only when they play at least `least_gain` more
    frames than the best single one. None when no joint makes a loop on its own or with others."""
    s = np.asarray(starts, dtype=np.int64)
    e = np.asarray(ends, dtype=np.int64)
    c = np.asarray(costs, dtype=np.float64)
    usable = np.flatnonzero(e - s >= shortest)  # a joint too short to loop on its own never helps
    if usable.size == 0:
        return None
    usable = usable[_undominated(s[usable], e[usable], c[usable])]
    s, e, c = s[usable], e[usable], c[usable]
    low, high = _widest_span(s, e, shortest)
    best: tuple[float, list[int]] | None = None
    for bottom_s, top_e in sorted(set(zip(low, high))):
        found = _cheapest_cycle(s, e, c, shortest, bottom_s, top_e)
        if found is not None and (best is None or found[0] < best[0]):
            best = found
    # One joint (the widest, then the cheapest) unless several play clearly more: two joints
    # from one alike stretch, (12, 107) and (9, 103), would chain for 3 frames otherwise.
    spans = e - s
    single = int(np.lexsort((c, -spans))[0])
    if best is None or (len(best[1]) > 1 and high[0] - low[0] < spans[single] + least_gain):
        return [int(usable[single])]
    return [int(usable[k]) for k in best[1]]


def _undominated(s: np.ndarray, e: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Indices of the joints no other one can stand in for: none lands as low or lower, leaves
    as late or later and costs as little or less (at most one joint per (s, e))."""
    size = int(max(s.max(), e.max())) + 2
    grid = np.full((size, size), np.inf, dtype=np.float32)
    np.minimum.at(grid, (s, e), c.astype(np.float32))
    # best[a, b]: the cheapest joint landing at a or lower and leaving at b or later. The grid
    # is padded by one row above and one column beyond so that a - 1 and b + 1 always exist.
    best = np.minimum.accumulate(grid, axis=0)
    best = np.minimum.accumulate(best[:, ::-1], axis=1)[:, ::-1]
    best = np.pad(best, ((1, 0), (0, 0)), constant_values=np.inf)
    # Every other joint in s's quadrant lands strictly lower or leaves strictly later.
    other = np.minimum(best[s, e], best[s + 1, e + 1])
    return np.flatnonzero(~(other <= c.astype(np.float32)))


def _widest_span(s: np.ndarray, e: np.ndarray, shortest: int) -> tuple[list[int], list[int]]:
    """The (S, E) pairs, lowest landing and highest leaving point, of the widest cycles."""
    order = np.lexsort((-e, s))  # landing up, and for one landing the latest leaving first
    so, eo = s[order], e[order]
    before = np.concatenate([[np.iinfo(np.int64).min], np.maximum.accumulate(eo)[:-1]])
    front = eo > before  # nothing lands as low or lower and leaves as late or later
    fs, fe = so[front], eo[front]  # both strictly rising
    # From landing fs[k] the joints it can take are those leaving at fs[k] + shortest or later:
    # a suffix of the front, whose first member lands lowest.
    step = np.searchsorted(fe, fs + shortest, side="left")
    lowest = np.arange(len(fs))
    for k in range(len(fs)):  # step[k] <= k, so the lower ones are already resolved
        lowest[k] = k if step[k] == k else lowest[step[k]]
    spans = fe - fs[lowest]
    widest = np.flatnonzero(spans == spans.max())
    return [int(fs[lowest[k]]) for k in widest], [int(fe[k]) for k in widest]


def _cheapest_cycle(
    s: np.ndarray, e: np.ndarray, c: np.ndarray, shortest: int, bottom_s: int, top_e: int
) -> tuple[float, list[int]] | None:
    """The cheapest cycle through a joint landing on `bottom_s` and one leaving at `top_e`."""
    weight = _PER_JOINT + c
    both = np.flatnonzero((s == bottom_s) & (e == top_e))
    if both.size:  # one joint spans it all: nothing with more joints can be cheaper
        k = int(both[np.argmin(weight[both])])
        return float(weight[k]), [k]
    # to_bottom[k]: cheapest way, from landing on s[k], to take a joint landing on bottom_s
    # (that joint included); after[k] is the next joint on that way. Every step lands lower.
    order = np.argsort(s, kind="stable")
    to_bottom = np.full(len(s), np.inf)
    after = np.full(len(s), -1)
    bottoms = s == bottom_s
    for k in order:
        if s[k] == bottom_s:
            continue  # a bottom joint's landing is the cycle's start, not a step on the way
        takes = e >= s[k] + shortest
        direct = np.where(takes & bottoms, weight, np.inf)
        onward = np.where(takes & (s < s[k]) & ~bottoms, weight + to_bottom, np.inf)
        d, o = int(np.argmin(direct)), int(np.argmin(onward))
        if direct[d] <= onward[o]:
            to_bottom[k], after[k] = direct[d], d
        else:
            to_bottom[k], after[k] = onward[o], o
    # The cycle: a bottom joint, then a top one straight away (from bottom_s every joint leaving
    # at top_e can be taken: top_e - bottom_s is a loop's length), then down to a bottom again.
    tops = np.flatnonzero((e == top_e) & ~bottoms)
    if tops.size == 0:
        return None
    through = weight[tops] + to_bottom[tops]
    t = int(tops[np.argmin(through)])
    if not np.isfinite(through.min()):
        return None
    path = [t]
    while not bottoms[path[-1]]:
        path.append(int(after[path[-1]]))
    # The walk from the top ended on the bottom joint it takes; the cycle starts after it.
    return float(through.min()), [path[-1]] + path[:-1]
