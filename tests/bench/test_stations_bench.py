"""`python -m poc bench stations`: N stations in one real `poc run --stations` process (real
nginx, RabbitMQ and ffmpeg), measured from its own /metrics; small frames so it is quick here."""

import json
import subprocess
import sys

import pytest

from poc.paths import PROJECT_ROOT


def bench(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "poc", "bench", "stations", *args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.mark.integration
@pytest.mark.slow
def test_two_small_stations_talking_are_measured_and_every_line_is_played():
    result = bench("--counts", "1,2", "--seconds", "12", "--settle", "2", "--resolution", "320x180",
                   "--fps", "15", "--talking", "0.5", timeout=240)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(result.stdout[result.stdout.index("{\n") :])
    one, two = report["results"]
    assert (one["stations"], two["stations"]) == (1, 2)
    for row in (one, two):
        assert row["lines_sent"] >= row["stations"]  # every station was given a line to say
        assert row["lines_played"] >= 1
        assert row["cpu_cores"] > 0 and row["rss_mib"] > 50
        assert 0.9 < row["min_frames_ratio"] < 1.1  # the clocks kept up with the wall clock
    assert report["per_added_station"][0]["stations"] == 2


def test_bad_arguments_get_a_one_line_error():
    result = bench("--counts", "0", timeout=60)
    assert result.returncode == 2
    assert result.stdout.strip().splitlines() == [
        "poc bench stations: --counts must be positive integers and --talking between 0 and 1"
    ]
