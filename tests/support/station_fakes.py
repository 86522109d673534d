"""Stand-ins for a station's Service where a test is about the host's supervision of stations
(poc.host), not about streaming: on air until asked to stop, with the attributes the host reads.
What a real Service does on air is tested against real parts elsewhere (tests/e2e)."""

from __future__ import annotations

from pathlib import Path

import anyio
import attrs
from anyio.abc import TaskStatus

from poc.config import Settings, load_settings


def settings_for(name: str, **env: str) -> Settings:
    """A station's settings streaming to rtmp://127.0.0.1/live/NAME, with `env` on top."""
    overrides = {"HTTP_PORT": "0", "RTMP_URL": f"rtmp://127.0.0.1/live/{name}", **env}
    return load_settings(environ={}, env_file=Path("/nonexistent"), overrides=overrides, check_files=False)


@attrs.define
class Station:
    """A stations file's entry, as the host's `reload` returns them."""

    name: str
    settings: Settings


class OnAirService:
    """On air from run() until asked to stop; `on_air` says whether it is. Subclasses say what
    it logs on the way (`went_on_air`, `prepare`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.startup_error = None
        self.stopped_by_operator = False
        self.on_air = False
        self._stop = anyio.Event()

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        self.went_on_air()
        self.on_air = True
        task_status.started()
        try:
            await self._stop.wait()
        finally:
            self.on_air = False

    def went_on_air(self) -> None:
        pass

    def prepare(self) -> None:
        pass

    def request_stop(self) -> None:
        self._stop.set()

    cut_short = request_stop

    def stay_stopped(self) -> None:
        self.stopped_by_operator = True

    def discard(self) -> None:
        pass
