"""A message's `expires_at`: read at the door, and a message past it never goes on air, whether
it was still waiting when the speech stage came to it or prepared ahead and waiting for its
first frame; it is dead-lettered with the reason and the stream plays on."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import uuid

import anyio
import numpy as np
import pytest
from media.test_compositor import SPF, make, speech_segment
from pipeline.test_speech_stage_no_audio import ScriptedSpeech, Station, text_job
from support import amqp
from test_stations_file import clean_env, stderr_line  # noqa: F401 - clean_env is a fixture

from poc.cli import main
from poc.jobs import Job, Outcome
from poc.messages import InvalidMessage, MessageLimits, TextMessage, parse_message
from poc.source.connection import control_queue_name, dead_letter_queue_name


def parsed(expires_at: object) -> TextMessage:
    body = {"type": "text", "data": "Flash sale!", "expires_at": expires_at}
    return parse_message(json.dumps(body).encode(), MessageLimits())  # type: ignore[return-value]


@pytest.mark.parametrize(
    "written",
    ["2026-12-01T18:00:00Z", "2026-12-01T19:00:00+01:00", "2026-12-01T18:00:00.000+00:00", 1796148000, 1796148000.0],
)
def test_a_time_with_a_timezone_or_epoch_seconds_is_read_as_that_moment(written: object) -> None:
    assert parsed(written).expires_at == datetime(2026, 12, 1, 18, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize("written", [None, "", "  "])
def test_no_expires_at_means_it_never_expires(written: object) -> None:
    message = parsed(written)
    assert message.expires_at is None
    assert Job(message=message, id="m").expiry_reason(time.time() + 10 * 365 * 86400) is None


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ("2026-12-01T18:00:00", "has no timezone"),  # whose local time? refused, not guessed
        ("2026-12-01", "has no timezone"),
        (1796148000000, "milliseconds?"),  # JavaScript's Date.now() would never expire
        ("tomorrow", "ISO 8601"),
        (True, "ISO 8601"),
        (-1, "ISO 8601"),
        ([1796148000], "ISO 8601"),
    ],
)
def test_a_time_that_cannot_be_read_is_refused_with_a_reason(written: object, said: str) -> None:
    with pytest.raises(InvalidMessage) as refused:
        parsed(written)
    assert str(refused.value).startswith("'expires_at' ") and said in str(refused.value)


def test_the_reason_names_the_time_and_how_late() -> None:
    job = Job(message=parsed("2026-12-01T18:00:00Z"), id="sale")
    moment = datetime(2026, 12, 1, 18, tzinfo=timezone.utc).timestamp()
    assert job.expiry_reason(moment - 0.1) is None
    assert job.expiry_reason(moment + 12.34) == "expired: not on air by its expires_at 2026-12-01T18:00:00Z (12.3 s late)"


def expiring_job(text: str, seconds_from_now: float, job_id: str) -> Job:
    message = TextMessage(type="text", data=text, expires_at=time.time() + seconds_from_now)
    return Job(message=message, id=job_id)


@pytest.mark.anyio
async def test_a_message_expired_when_its_turn_comes_is_dead_lettered_without_being_spoken() -> None:
    speech = ScriptedSpeech({"Old news.": [800], "Still fresh.": [800], "No limit.": [800]})
    station = Station(speech)
    stale = expiring_job("Old news.", -5.0, "stale")
    fresh = expiring_job("Still fresh.", 600.0, "fresh")
    plain = text_job("No limit.", "plain")
    await station.run([stale, fresh, plain])
    assert speech.asked == ["Still fresh.", "No limit."]  # the voice never spent time on it
    [(dead_id, reason)] = station.dead
    assert dead_id == "stale" and reason.startswith("expired: not on air by its expires_at ")
    assert stale.outcome is Outcome.DEAD_LETTERED and not fresh.is_settled and not plain.is_settled


def test_a_prepared_message_that_expires_before_its_first_frame_never_airs_and_the_next_plays() -> None:
    comp, schedule, chart = make()
    settled: list[Job] = []
    comp._on_settled = settled.append  # noqa: SLF001 - the pipeline hands the compositor this callback
    stale = speech_segment(start=3, frames=5)
    stale.job = expiring_job("Sale ends now.", 0.05, "stale")  # prepared ahead, then an outage, say
    after = speech_segment(start=20, frames=5)
    schedule.append(stale)
    schedule.append(after)
    chart.message_accepted()
    time.sleep(0.1)
    audio = [comp.render(k)[1] for k in range(30)]
    assert not np.concatenate(audio[:20]).any()  # nothing of the stale one reached the air
    assert stale.job.outcome is Outcome.DEAD_LETTERED and "expired" in stale.job.reason
    assert [int(a[0]) for a in audio[20:25]] == [1000 + i for i in range(5)]  # the next one played
    assert all(len(a) == SPF for a in audio)  # the clock never missed a frame's audio
    assert settled[0] is stale.job
    assert stale.job.on_air_at is None


def test_an_expiry_later_than_the_first_frame_lets_the_message_play_to_its_end() -> None:
    """Expiry is about going on air late: once on air, a message is never cut for it."""
    comp, schedule, _ = make()
    seg = speech_segment(start=0, frames=10)
    seg.job = expiring_job("Sale ends soon.", 0.2, "on-time")
    schedule.append(seg)
    comp.render(0)
    time.sleep(0.3)
    audio = [comp.render(k)[1] for k in range(1, 12)]
    assert [int(a[0]) for a in audio[:9]] == [1001 + i for i in range(9)]
    assert seg.job.outcome is Outcome.PLAYED


@pytest.mark.anyio
async def test_the_stage_goes_on_after_an_expired_message(anyio_backend: str) -> None:
    """Many expired messages in a row (a long stop's backlog) cost no speech and no wait."""
    speech = ScriptedSpeech({"Now.": [800]})
    station = Station(speech)
    backlog = [expiring_job(f"Old {i}.", -60.0, f"old-{i}") for i in range(50)]
    now = text_job("Now.", "now")
    with anyio.fail_after(5):
        await station.run([*backlog, now])
    assert len(station.dead) == 50 and speech.asked == ["Now."]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--control", "stop", "--expires-in", "5"], "poc send: --expires-in applies to TEXT or --audio (a control message acts at once)"),
        (["--expires-in", "0", "Flash sale!"], "poc send: expires in 0 s: it must be a positive number of seconds"),
        (["--expires-in", "nan", "Flash sale!"], "poc send: expires in nan s: it must be a positive number of seconds"),
    ],
)
def test_send_refuses_an_expiry_that_cannot_apply(clean_env, capsys, args: list[str], expected: str) -> None:
    assert main(["send", *args]) == 2
    assert stderr_line(capsys) == expected


@pytest.mark.integration
def test_send_expires_in_puts_the_moment_in_the_message(clean_env, monkeypatch, rabbitmq, capsys) -> None:
    queue = f"poc_test_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("RABBITMQ_QUEUE", queue)
    try:
        before = time.time()
        assert main(["send", "--expires-in", "90", "The flash sale ends soon!"]) == 0
        ((body, _headers),) = amqp.drain(queue)
        message = parse_message(body, MessageLimits())
        assert before + 89 <= message.expires_at <= time.time() + 90  # type: ignore[union-attr, operator]
    finally:
        amqp.delete(queue, control_queue_name(queue), dead_letter_queue_name(queue))
