"""When each station's frames are due, on one time scale that every station shares.

The engine knows a frame by its counter value: frame k of a station is shown at
start + k/fps of that station's media clock (poc.media.clock), and each station's clock started
at its own moment. Counter / fps alone is each station's media time, which cannot rank frames
across stations: a station put on air an hour after another would always look an hour
earlier and, on an overloaded GPU, starve the older one.

So each station's media time is anchored to the process's monotonic clock. The pipeline hands a
slot to the engine at the latest `lead` before it is shown (it never lays audio closer to the
present than that), usually earlier. Each feed therefore gives a lower bound on the station's
start: now - k/fps <= start - lead. The anchor is the tightest such bound seen so far (a running
maximum): it settles after the first message that is fed as it is spoken, follows the clock when
it is re-based forwards after a stall, and is not pulled off by messages synthesised far ahead.
A frame's deadline is then anchor + k/fps, about its showing time minus the lead. Engines on one
model have about the same lead, so deadlines compare fairly across stations.
Before the first feed (warm-up) a frame is taken as due now.
"""

from __future__ import annotations

import time
from typing import Callable


class StationClock:
    """Frame counter -> seconds on time.monotonic()'s scale (see the module docstring)."""

    def __init__(self, fps: float, now: Callable[[], float] = time.monotonic) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = fps
        self._now = now
        self.anchor: float | None = None

    def observe(self, counter: int) -> None:
        """Frame `counter` is being handed to the engine now."""
        bound = self._now() - counter / self.fps
        # a lost update between two threads only delays tightening the bound: no lock needed
        if self.anchor is None or bound > self.anchor:
            self.anchor = bound

    def deadline(self, counter: int) -> float:
        if self.anchor is None:
            return self._now()
        return self.anchor + counter / self.fps
