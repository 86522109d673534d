"""The media clock paces on an absolute grid: lateness never accumulates into drift."""

import pytest

from poc.media.clock import FrameClock


class FakeTime:
    """A clock the test moves by hand; sleeping jumps straight to the deadline."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep_until(self, deadline: float) -> None:
        self.sleeps.append(deadline)
        self.t = max(self.t, deadline)


def make_clock(fps: int, fake: FakeTime, **kw) -> FrameClock:
    return FrameClock(fps, now=fake.now, sleep_until=fake.sleep_until, **kw)


@pytest.mark.anyio
async def test_deadlines_are_start_plus_k_over_fps():
    fake = FakeTime()
    ticks = []
    async for tick in make_clock(30, fake).ticks():
        ticks.append(tick)
        if tick.frame == 299:
            break
    assert [t.frame for t in ticks] == list(range(300))
    for t in ticks:
        assert t.deadline == pytest.approx(1000.0 + t.frame / 30, abs=1e-9)
    assert all(t.lateness == 0 for t in ticks)


@pytest.mark.anyio
async def test_a_late_tick_does_not_shift_later_deadlines():
    fake = FakeTime()
    ticks = []
    async for tick in make_clock(25, fake).ticks():
        ticks.append(tick)
        if tick.frame == 10:
            fake.t += 0.1  # the consumer stalled for 2.5 frames
        if tick.frame == 40:
            break
    late = [t for t in ticks if t.lateness > 0]
    assert [t.frame for t in late] == [11, 12]  # caught up back to back, no sleeping
    assert late[0].lateness == pytest.approx(0.1 - 0.04, abs=1e-9)
    # every deadline stays on the original grid
    for t in ticks:
        assert t.deadline == pytest.approx(1000.0 + t.frame / 25, abs=1e-9)


@pytest.mark.anyio
async def test_a_long_stall_rebases_instead_of_bursting():
    fake = FakeTime()
    clock = make_clock(30, fake, max_catch_up=1.0)
    frames = []
    async for tick in clock.ticks():
        frames.append(tick)
        if tick.frame == 5:
            fake.t += 10.0  # a suspended VM
        if tick.frame == 12:
            break
    assert clock.rebases == 1
    assert [t.frame for t in frames] == list(range(13))  # the frame counter never skips
    assert all(t.lateness < 0.05 for t in frames[7:])
