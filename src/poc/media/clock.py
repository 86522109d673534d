"""The one media clock: frame k is due at start + k/fps on an absolute deadline grid.

Pacing happens here and nowhere else. Deadlines are computed from the frame number, never by
adding 1/fps to the previous wake-up, so a late tick is caught up by the next ones instead of
shifting every later frame (no drift from sleep jitter). If the process was stalled for longer
than `max_catch_up` (a suspended VM, a debugger), the grid is re-based rather than bursting
seconds of frames at once; the media timeline (frame counter) is unaffected either way.
The time source is injectable so tests can drive it deterministically.
"""

from __future__ import annotations

from typing import AsyncIterator, Awaitable, Callable

import anyio
import attrs


@attrs.frozen
class Tick:
    frame: int  # the frame counter: frame k has timestamp k/fps in the stream
    deadline: float  # when frame k was due (clock seconds)
    lateness: float  # seconds between the deadline and the wake-up (>= 0)


@attrs.define
class FrameClock:
    fps: int
    max_catch_up: float = 1.0
    now: Callable[[], float] = anyio.current_time
    sleep_until: Callable[[float], Awaitable[None]] = anyio.sleep_until
    rebases: int = 0

    async def ticks(self, first_frame: int = 0) -> AsyncIterator[Tick]:
        frame = first_frame
        origin = self.now() - frame / self.fps
        while True:
            deadline = origin + frame / self.fps
            now = self.now()
            if now < deadline:
                await self.sleep_until(deadline)
                now = self.now()
            elif now - deadline > self.max_catch_up:
                origin = now - frame / self.fps
                deadline = now
                self.rebases += 1
                await anyio.lowlevel.checkpoint()
            else:
                await anyio.lowlevel.checkpoint()  # let other tasks run while catching up
            yield Tick(frame=frame, deadline=deadline, lateness=max(0.0, now - deadline))
            frame += 1
