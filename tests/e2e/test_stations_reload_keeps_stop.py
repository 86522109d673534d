"""An operator stopped a station, then changed it in the stations file and sent SIGHUP. The
rebuilt station used to go back on air and play what had been queued while it was stopped: the
rebuild undid the operator's stop. It now begins stopped and waits for the operator's start.
Real process, nginx-rtmp and RabbitMQ."""

from __future__ import annotations

import signal
import time

import pytest
from e2e.test_stations import health, stations, stations_toml  # noqa: F401 (stations: a fixture)
from support import amqp
from support.polling import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_stopped_station_changed_on_sighup_stays_off_air_until_started(stations, tmp_path):  # noqa: F811
    keys, start, _ = stations
    service = start(["a", "b"])
    service.wait_for_log(r"2 stations on air", timeout=180)
    wait_until(lambda: health(service)[1].get("unhealthy") == [], 30)
    queue = keys["a"]["queue"]
    amqp.publish(queue + ".control", {"type": "control", "action": "stop"})
    service.wait_for_log(r"\[a\] control: stop: off air by operator", timeout=30)
    amqp.publish(queue, {"type": "text", "data": "Said only after the start.", "id": "after-start"})

    keys["a"]["idle_seed"] = "3"  # a change: station a is rebuilt
    (tmp_path / "stations.toml").write_text(stations_toml({name: keys[name] for name in "ab"}))
    mark = len(service.log_text())
    service.signal(signal.SIGHUP)
    service.wait_for_log(r"SIGHUP: 0 stations added, 0 removed, 1 changed, 1 unchanged", timeout=30, start=mark)
    service.wait_for_log(r"station a: running, off air as an operator stopped it", timeout=120, start=mark)
    time.sleep(2)  # time to take the message, had it been consumed
    assert amqp.message_count(queue) == 1
    assert "after-start: on air" not in service.log_text()
    _, overall = health(service)
    assert overall["stations"]["a"]["on_air"] is False

    amqp.publish(queue + ".control", {"type": "control", "action": "start"})
    service.wait_for_log(r"message after-start: played", timeout=60, start=mark)
    assert amqp.message_count(queue) == 0
    assert service.stop() == 0
