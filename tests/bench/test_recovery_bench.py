"""`python -m poc bench recovery --fault service`: a service killed mid-sentence is restarted,
is back on air, and the message it was playing is heard again exactly once; the report says so
and the bench leaves no queue behind. Real nginx, RabbitMQ and ffmpeg."""

import asyncio
import json
import subprocess
import sys

import aio_pika
import pytest

from poc.paths import PROJECT_ROOT

FIGURES = ("kill_to_readable_s", "kill_to_connected_s", "kill_to_replay_on_air_s", "start_to_streaming_s")


def bench(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "poc", "bench", "recovery", *args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def queue_exists(queue: str) -> bool:
    async def go() -> bool:
        connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
        async with connection:
            channel = await connection.channel()
            try:
                await channel.declare_queue(queue, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                return False
            return True

    return asyncio.run(go())


@pytest.mark.integration
@pytest.mark.slow
def test_killed_service_is_back_and_replays_the_message_once(rabbitmq):
    result = bench("--fault", "service", "--runs", "1", timeout=150)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["fault"] == "service"
    [run] = report["runs"]
    # Cut off before it ended, then on air and played once in the new process.
    assert (run["played_before_kill"], run["replay_on_air_count"], run["replay_played_count"]) == (0, 1, 1)
    assert report["replayed_exactly_once"] is True
    assert report["left_in_queue"] == 0
    for name in FIGURES:
        assert 0 < run[name] < 120, name
        assert report["median"][name] == run[name]  # one run: its own median
    # The new process starts after the kill, and only a connected consumer gets the message back.
    assert 0 <= run["kill_to_restart_s"] < run["kill_to_connected_s"] < run["kill_to_replay_on_air_s"]
    assert run["kill_to_restart_s"] < run["kill_to_readable_s"]
    assert not queue_exists(report["queue"])


@pytest.mark.slow  # seconds of CPU: the full suite runs it, the fast lane does not
def test_bad_arguments_get_a_one_line_error():
    for args, error in ((["--runs", "0"], "--runs: must be at least 1, got 0"),
                        (["--fault", "host"], "--fault: invalid choice: 'host'")):  # fmt: skip
        result = bench(*args, timeout=60)
        assert result.returncode == 2
        assert error in result.stderr.splitlines()[-1]
