"""SIGHUP after the operator replaced a station's avatar picture in place (same file name, new
face): the stations file reads the new picture (it checks that it decodes), so the station must
be rebuilt with it. It used to count as unchanged, as only the file's settings were compared:
"0 changed", and the old face stayed on air until the process restarted. Real process,
nginx-rtmp and RabbitMQ."""

from __future__ import annotations

import shutil
import signal

import cv2
import pytest
from e2e.test_stations import health, stations, stations_toml  # noqa: F401 (stations: a fixture)
from support.polling import wait_until

from poc.paths import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_station_whose_avatar_file_was_replaced_is_rebuilt_with_the_new_face(stations, tmp_path):  # noqa: F811
    keys, start, _ = stations
    face = tmp_path / "face.png"
    shutil.copyfile(PROJECT_ROOT / "assets" / "avatar.png", face)
    keys["a"]["avatar"] = str(face)
    service = start(["a", "b"])
    service.wait_for_log(r"2 stations on air", timeout=180)
    wait_until(lambda: health(service)[1].get("unhealthy") == [], 30)  # both streaming

    mirrored = cv2.flip(cv2.imread(str(face)), 1)  # the same size, another picture
    cv2.imwrite(str(tmp_path / "new.png"), mirrored)
    (tmp_path / "new.png").replace(face)  # as an upload lands: whole, under the old name
    mark = len(service.log_text())
    service.signal(signal.SIGHUP)
    service.wait_for_log(r"SIGHUP: 0 stations added, 0 removed, 1 changed, 1 unchanged", timeout=30, start=mark)
    service.wait_for_log(r"station a: on air", timeout=120, start=mark)
    wait_until(lambda: health(service)[1].get("unhealthy") == [], 30)
    code, overall = health(service)
    assert code == 200 and sorted(overall["stations"]) == ["a", "b"]
    assert overall["stations"]["a"]["uptime_seconds"] < overall["stations"]["b"]["uptime_seconds"]

    # The same picture written again (a sync that rewrites every file): no change, no gap.
    face.write_bytes(face.read_bytes())
    mark = len(service.log_text())
    service.signal(signal.SIGHUP)
    service.wait_for_log(r"SIGHUP: 0 stations added, 0 removed, 0 changed, 2 unchanged", timeout=30, start=mark)
    assert service.stop() == 0
