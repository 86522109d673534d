"""A station changed on SIGHUP has its face engine and voice made ready while the old one stays
on air (Host._replace). What that work logs ("warp engine ready: ...", a voice loaded) must name
the station, as every other line of a station's does: in a log shared by several stations a
line without a name cannot be told apart. The stations are built through the host's `build`
hook (the supervision is what is tested); their `prepare` logs as Service.prepare's parts do."""

from __future__ import annotations

import logging
import os
import signal

import anyio
import pytest
from support.polling import eventually
from support.station_fakes import OnAirService, Station, settings_for

from poc.config import Settings
from poc.host import Host

pytestmark = pytest.mark.anyio


log = logging.getLogger("poc.face.warp")


class QuietService(OnAirService):
    """`prepare` logs as the face engine's build does."""

    def prepare(self) -> None:
        log.info("warp engine ready at %d fps", self.settings.fps)


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
            wanted[1] = Station("shop", settings_for("shop", RTMP_FPS="25"))
            os.kill(os.getpid(), signal.SIGHUP)  # the host's signal receiver takes it
            await eventually(lambda: len(built) == 3 and built[2].on_air)
            os.kill(os.getpid(), signal.SIGTERM)
    ready = [record.getMessage() for record in named_lines.records if "warp engine ready" in record.getMessage()]
    assert ready == ["[shop] warp engine ready at 25 fps"], ready
