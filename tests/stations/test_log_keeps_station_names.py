"""Every line a station logs starts with `[NAME] ` so that one log can be read per station. The
example stations file names each station after its stream key (`lobby` streams to .../live/lobby),
and the stream key is a secret the log masks: every line of such a station read `[***] ...`, and
the host's own lines ("station ***: on air") could not say which station either. A station's
name is public (its studio's URL, the `station` label on the open /metrics), so it is never
masked; its real secrets still are. Real logging set-up (poc.ops.logs), a real Host; the
stations are built through the host's `build` hook, and log as a station's tasks do."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator

import anyio
import pytest
from support.polling import eventually
from support.station_fakes import OnAirService, Station, settings_for

from poc.config import Settings
from poc.host import Host
from poc.ops.logs import RedactSecrets, StationPrefix, configure_logging, show_station
from poc.stations import log_secrets
from poc.stations.current import CURRENT_STATION

pytestmark = pytest.mark.anyio

API_KEY = "sk-weather-0123456789abcdef"
log = logging.getLogger("poc.media.writer")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging owns the root logger; put back what the rest of the suite expects."""
    root = logging.getLogger()
    level = root.level
    yield
    for handler in list(root.handlers):
        if any(isinstance(f, RedactSecrets) for f in handler.filters):
            root.removeHandler(handler)
        for found in [f for f in handler.filters if isinstance(f, StationPrefix)]:  # pytest's own handlers
            handler.removeFilter(found)
    root.setLevel(level)


class TalkingService(OnAirService):
    """Logs what a station's writer logs when it goes on air."""

    def went_on_air(self) -> None:
        key = self.settings.tts_api_key.get_secret_value() if self.settings.tts_api_key else "none"
        log.info("on air: streaming to %s (voice key %s)", self.settings.rtmp_url, key)


async def test_a_station_added_on_sighup_is_named_in_its_lines_and_its_api_key_is_masked(capsys) -> None:
    first = [Station("lobby", settings_for("lobby-k3y"))]
    wanted = list(first)
    built: list[TalkingService] = []

    def build(settings: Settings) -> TalkingService:
        built.append(TalkingService(settings))
        return built[-1]

    configure_logging("info", log_secrets(first))  # as `run --stations` sets the log up
    show_station(CURRENT_STATION)
    host = Host(settings_for("process"), reload=lambda: list(wanted), build=build)  # type: ignore[arg-type]
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(host.run, list(first))
            await eventually(lambda: len(built) == 1 and built[0].on_air)
            wanted.append(Station("weather", settings_for("weather", TTS_API_KEY=API_KEY)))
            os.kill(os.getpid(), signal.SIGHUP)  # the host's signal receiver takes it
            await eventually(lambda: len(built) == 2 and built[1].on_air)
            os.kill(os.getpid(), signal.SIGTERM)
    err = capsys.readouterr().err
    assert "[weather] on air: streaming to rtmp://127.0.0.1/live/weather (voice key ***)" in err, err
    assert "station weather: on air" in err, err
    assert API_KEY not in err
    assert "[lobby] on air: streaming to rtmp://127.0.0.1/live/*** (voice key none)" in err, err  # its key
