"""A backlog with a hosted face: each message's video is asked for as soon as its speech is
complete, not once the message before it has played, so messages queued behind each other play
one after the other instead of each waiting out the vendor's whole render on the idle avatar.

The vendor is D-ID's simulator with the real client; its talks work until the test lets them
finish. The speech and the local engine are the property tests' stand-ins (job N's audio is the
constant N), as in test_hosted_fetch.py, whose helpers these tests share."""

from __future__ import annotations

import anyio
import pytest

from poc.jobs import Job, Outcome
from poc.metrics import Metrics
from poc.simulators.did import DIdServer

from pipeline.test_hosted_fetch import FOREVER, Air, did_client, eventually, job, make_pipeline, release, talks_by_job
from test_pipeline_properties import FPS

pytestmark = pytest.mark.slow  # seconds of CPU: the full suite runs these, the fast lane does not

ASK_WITHIN_S = 5.0  # the second message's request starts this soon after its speech, at most


@pytest.fixture
def did():
    sim = DIdServer(polls_to_finish=FOREVER).start()
    yield sim
    sim.stop()


async def play_a_backlog(did: DIdServer) -> tuple[list[Job], bool, Air]:
    """Jobs 1 and 2 queued together; returns them, whether the vendor was asked for job 2 while
    job 1's talk was still rendering, and the air."""
    client = did_client(did)
    pipeline = make_pipeline(client, Metrics())
    air = Air(pipeline)
    first, second = job(1, "One two three four five six"), job(2, "Seven eight nine ten")
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)
        tg.start_soon(air.run)
        pipeline.submit(first)
        pipeline.submit(second)
        both_asked = await eventually(lambda: len(did.jobs) == 2, timeout=ASK_WITHIN_S)
        release(did)
        settled = lambda: second.is_settled and pipeline.chart.state_id == "idle"  # noqa: E731
        assert await eventually(settled), "the jobs did not play"
        tg.cancel_scope.cancel()
    client.close()
    return [first, second], both_asked, air


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_queued_message_s_video_is_asked_for_while_the_one_before_renders(did, backend) -> None:
    jobs, both_asked, air = anyio.run(play_a_backlog, did, backend=backend)
    assert both_asked, "the vendor was asked for the second message only after the first had played"
    assert [j.outcome for j in jobs] == [Outcome.PLAYED, Outcome.PLAYED]
    assert talks_by_job(did) == [1, 2]  # one request each
    playing = [number for number, _ in air.frames]
    last_of_first = max(i for i, number in enumerate(playing) if number == 1)
    first_of_second = playing.index(2)
    # Both videos were ready together: only the usual pause between two messages (0.3 s, and the
    # cross-fade's room), not a second render on the idle avatar.
    assert (first_of_second - last_of_first) / FPS < 1.0, (last_of_first, first_of_second)
    for number in (1, 2):
        shown = air.of(number)
        assert all(shown[len(shown) // 2 :]), f"job {number} did not play with the vendor's video"
