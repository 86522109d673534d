"""A station changed on SIGHUP has its face engine and voice made ready while the old one stays
on air (Host._replace). What that work logs ("warp engine ready: ...", a voice loaded) must name
the station, as every other line of a station's does: in a log shared by several stations a
line without a name cannot be told apart. The stations are built through the host's `build`
hook (the supervision is what is tested); their `prepare` logs as Service.prepare's parts do."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import anyio
import attrs
import pytest
from anyio.abc import TaskStatus
from support.polling import eventually

from poc.config import Settings, load_settings
from poc.host import Host
from poc.ops.logs import StationPrefix
from poc.stations.current import CURRENT_STATION

pytestmark = pytest.mark.anyio


@pytest.fixture
def named_lines(caplog):
    """caplog, its lines tagged with their station as `run --stations` tags the log's."""
    prefix = StationPrefix(CURRENT_STATION)
    caplog.handler.addFilter(prefix)
    yield caplog
    caplog.handler.removeFilter(prefix)  # the handler outlives the test

log = logging.getLogger("poc.face.warp")


def settings_for(name: str, fps: int = 25) -> Settings:
    overrides = {"HTTP_PORT": "0", "RTMP_URL": f"rtmp://127.0.0.1/live/{name}", "RTMP_FPS": str(fps)}
    return load_settings(environ={}, env_file=Path("/nonexistent"), overrides=overrides, check_files=False)


@attrs.define
class Station:
    name: str
    settings: Settings


class QuietService:
    """On air until asked to stop; `prepare` logs as the face engine's build does."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.startup_error = None
        self.stopped_by_operator = False
        self.on_air = False
        self._stop = anyio.Event()

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        self.on_air = True
        task_status.started()
        try:
            await self._stop.wait()
        finally:
            self.on_air = False

    def prepare(self) -> None:
        log.info("warp engine ready at %d fps", self.settings.fps)

    def request_stop(self) -> None:
        self._stop.set()

    cut_short = request_stop

    def discard(self) -> None:
        pass


async def test_the_work_preparing_a_changed_station_is_logged_under_its_name(named_lines) -> None:
    wanted = [Station("lobby", settings_for("lobby")), Station("shop", settings_for("shop"))]
    built: list[QuietService] = []

    def build(settings: Settings) -> QuietService:
        built.append(QuietService(settings))
        return built[-1]

    host = Host(settings_for("process"), reload=lambda: list(wanted), build=build)  # type: ignore[arg-type]
    with named_lines.at_level(logging.INFO, logger="poc.face.warp"), anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(host.run, list(wanted))
            await eventually(lambda: len(built) == 2 and all(service.on_air for service in built))
            wanted[1] = Station("shop", settings_for("shop", fps=30))
            os.kill(os.getpid(), signal.SIGHUP)  # the host's signal receiver takes it
            await eventually(lambda: len(built) == 3 and built[2].on_air)
            os.kill(os.getpid(), signal.SIGTERM)
    ready = [record.getMessage() for record in named_lines.records if "warp engine ready" in record.getMessage()]
    assert ready == ["[shop] warp engine ready at 30 fps"], ready
