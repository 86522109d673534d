"""The host's supervision of stations: failures, reloads and signals arriving at awkward moments.

What must hold for an operator: a station removed or stopped is never put back on air by a
rebuild that was pending; a reload never hangs (every later SIGHUP would be ignored); a station a
reload was starting when SIGTERM came is stopped gracefully, never cut off by cancellation; a
rebuild whose engine cannot load is tried again rather than leaving the air without a word.

The stations here are services whose failures the test controls, built through the host's
`build` hook: the supervision is what is tested, and the real Service's own stop and failure
paths are tested on real streams (tests/e2e/test_stations.py, tests/e2e/test_resilience.py).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import anyio
import attrs
import pytest
from anyio.abc import TaskStatus

from support.polling import eventually

import poc.host as host_module
from poc.config import Settings, load_settings
from poc.errors import StartupError
from poc.host import Host

pytestmark = pytest.mark.anyio


def settings_for(name: str) -> Settings:
    overrides = {"HTTP_PORT": "0", "RTMP_URL": f"rtmp://127.0.0.1/live/{name}"}
    return load_settings(environ={}, env_file=Path("/nonexistent"), overrides=overrides, check_files=False)


@attrs.define
class Station:
    name: str
    settings: Settings


class ScriptedService:
    """Stands for one station's Service: on air until asked to stop, or until the test makes it
    fail; `ended` says how its run ended ("stopped", "failed", "cancelled")."""

    def __init__(self, settings: Settings, script: Script) -> None:
        self.settings = settings
        self.script = script
        self.name = settings.rtmp_url.rsplit("/", 1)[-1]
        self.startup_error: StartupError | None = script.startup_errors.pop(self.name, None)
        self.fail_when_stopping = self.name in script.fail_when_stopping
        self.may_stop = script.may_stop.get(self.name)
        self._stop = anyio.Event()
        self._fail = anyio.Event()
        self.on_air = False
        self.ended: str | None = None
        self.discarded = False
        self.stopped_by_operator = False  # as Service: set by an operator's stop, or stay_stopped()

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        if self.startup_error is not None:  # as Service.run does when its engine cannot load
            self.ended = "startup error"
            return
        self.on_air = True
        task_status.started()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._fail_or_stop, tg)
        except BaseException as error:
            if isinstance(error, anyio.get_cancelled_exc_class()):
                self.ended = "cancelled"
            raise
        finally:
            self.on_air = False

    async def _fail_or_stop(self, tg: object) -> None:
        async with anyio.create_task_group() as inner:
            inner.start_soon(self._wait_then_cancel, self._stop, inner)
            inner.start_soon(self._wait_then_cancel, self._fail, inner)
        if self._fail.is_set() and not self._stop.is_set():
            self.ended = "failed"
            raise RuntimeError(f"{self.name} failed on air")
        if self.may_stop is not None:
            await self.may_stop.wait()
        if self.fail_when_stopping:
            self.ended = "failed"
            raise RuntimeError(f"{self.name} failed while stopping")
        self.ended = "stopped"

    @staticmethod
    async def _wait_then_cancel(event: anyio.Event, scope: object) -> None:
        await event.wait()
        scope.cancel_scope.cancel()  # type: ignore[attr-defined]

    def request_stop(self) -> None:
        self._stop.set()

    def stay_stopped(self) -> None:
        self.stopped_by_operator = True

    def discard(self) -> None:
        self.discarded = True

    def prepare(self) -> None:  # as Service.prepare: the face found and the voice loaded, or a StartupError
        error = self.script.engine_errors.pop(self.name, None)
        if error is not None:
            raise error

    def cut_short(self) -> None:
        self._stop.set()

    def fail(self) -> None:
        self._fail.set()


@attrs.define
class Script:
    """What the test wants of the stations, and every service the host built, in order."""

    startup_errors: dict[str, StartupError] = attrs.Factory(dict)
    fail_when_stopping: set[str] = attrs.Factory(set)
    may_stop: dict[str, anyio.Event] = attrs.Factory(dict)
    build_gates: dict[str, threading.Event] = attrs.Factory(dict)
    build_errors: dict[str, list[Exception]] = attrs.Factory(dict)
    engine_errors: dict[str, StartupError] = attrs.Factory(dict)
    building: set[str] = attrs.Factory(set)
    built: list[ScriptedService] = attrs.Factory(list)
    wanted: list[Station] = attrs.Factory(list)

    def build(self, settings: Settings) -> ScriptedService:
        name = settings.rtmp_url.rsplit("/", 1)[-1]
        self.building.add(name)
        gate = self.build_gates.get(name)
        if gate is not None:
            assert gate.wait(10), "the test never let the build finish"
        if self.build_errors.get(name):
            raise self.build_errors[name].pop(0)
        service = ScriptedService(settings, self)
        self.built.append(service)
        return service

    def of(self, name: str) -> list[ScriptedService]:
        return [service for service in self.built if service.name == name]

    def on_air(self, name: str) -> bool:
        return any(service.on_air for service in self.of(name))

    def reload(self) -> list[Station]:
        return list(self.wanted)


def stations(*names: str) -> list[Station]:
    return [Station(name, settings_for(name)) for name in names]


def send(signum: signal.Signals) -> None:
    os.kill(os.getpid(), signum)  # the host's signal receiver takes it; the default action never runs


async def run_host(script: Script, tg: object, names: list[str]) -> Host:
    host = Host(settings_for("process"), reload=script.reload, build=script.build)  # type: ignore[arg-type]
    script.wanted = stations(*names)
    tg.start_soon(host.run, stations(*names))  # type: ignore[attr-defined]
    await eventually(lambda: all(script.on_air(name) for name in names))
    return host


async def test_a_station_removed_while_waiting_to_be_rebuilt_stays_off_and_later_reloads_apply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(host_module, "RESTART_BACKOFF_S", (30.0,))  # the reload comes during it
    script = Script()
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            host = await run_host(script, tg, ["a", "b"])
            script.of("a")[0].fail()
            await eventually(lambda: "a" in host.on_air and host.on_air["a"].rebuilding)

            script.wanted = stations("b")
            send(signal.SIGHUP)
            await eventually(lambda: "a" not in host.on_air)
            # The first reload finished: the next one is applied, not ignored.
            script.wanted = stations("b", "c")
            send(signal.SIGHUP)
            await eventually(lambda: script.on_air("c"))

            send(signal.SIGTERM)
    assert len(script.of("a")) == 1, "the removed station was rebuilt"
    assert [service.ended for service in script.built[1:]] == ["stopped", "stopped"]


async def test_a_station_that_fails_while_stopping_is_not_rebuilt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_module, "RESTART_BACKOFF_S", (0.05,))  # a rebuild, were there one, comes at once
    script = Script(fail_when_stopping={"a"})
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await run_host(script, tg, ["a", "b"])
            send(signal.SIGTERM)
    assert [service.ended for service in script.built] == ["failed", "stopped"]


async def test_a_changed_station_that_fails_while_stopping_comes_back_with_its_new_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(host_module, "RESTART_BACKOFF_S", (0.05,))
    script = Script(fail_when_stopping={"a"})
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            host = await run_host(script, tg, ["a"])
            changed = Station("a", settings_for("a").model_copy(update={"fps": 25}))
            script.fail_when_stopping.clear()
            script.wanted = [changed]
            send(signal.SIGHUP)
            await eventually(lambda: len(script.of("a")) == 2 and script.on_air("a"))
            assert host.on_air["a"].service.settings.fps == 25
            send(signal.SIGTERM)
    assert [service.ended for service in script.of("a")] == ["failed", "stopped"]


async def test_a_rebuild_whose_engine_cannot_load_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_module, "RESTART_BACKOFF_S", (0.05,))
    script = Script()
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            host = await run_host(script, tg, ["a"])
            script.startup_errors["a"] = StartupError("MuseTalk: CUDA out of memory", setting="TALKING_FACE_MODEL")
            script.of("a")[0].fail()
            await eventually(lambda: len(script.of("a")) == 3 and script.on_air("a"))
            assert "a" in host.on_air
            send(signal.SIGTERM)
    assert [service.ended for service in script.of("a")] == ["failed", "startup error", "stopped"]


async def test_a_station_being_added_when_sigterm_comes_is_never_cut_off_by_cancellation() -> None:
    script = Script(build_gates={"c": threading.Event()}, may_stop={"b": anyio.Event()})
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await run_host(script, tg, ["a", "b"])
            script.wanted = stations("a", "b", "c")
            send(signal.SIGHUP)
            await eventually(lambda: "c" in script.building)
            send(signal.SIGTERM)
            await eventually(lambda: script.of("a")[0].ended == "stopped")
            script.build_gates["c"].set()  # c is built while b is still stopping
            await anyio.sleep(0.2)
            script.may_stop["b"].set()
    assert all(service.ended != "cancelled" for service in script.built), [
        (service.name, service.ended) for service in script.built
    ]


async def test_a_station_stopped_while_its_rebuild_is_being_built_lets_the_new_one_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A build cannot be cancelled; the Service it makes holds a port the station built after
    it needs, so it is discarded, never run and never dropped unreleased."""
    monkeypatch.setattr(host_module, "RESTART_BACKOFF_S", (0.05,))
    script = Script()
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            host = await run_host(script, tg, ["a", "b"])
            script.build_gates["a"] = threading.Event()
            script.building.discard("a")
            script.of("a")[0].fail()
            await eventually(lambda: "a" in script.building)  # the rebuild is being built
            script.wanted = stations("b")
            send(signal.SIGHUP)
            await anyio.sleep(0.1)
            script.build_gates["a"].set()
            await eventually(lambda: "a" not in host.on_air)
            send(signal.SIGTERM)
    rebuilt = script.of("a")[1]
    assert rebuilt.discarded and rebuilt.ended is None


async def test_a_rebuild_that_cannot_even_be_built_is_tried_again_and_the_others_stay_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(host_module, "RESTART_BACKOFF_S", (0.05,))
    script = Script()
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await run_host(script, tg, ["a", "b"])
            script.build_errors["a"] = [StartupError("IDLE_AVATAR_PATH: no such file", setting="IDLE_AVATAR_PATH")]
            script.of("a")[0].fail()
            await eventually(lambda: len(script.of("a")) == 2 and script.on_air("a"))
            assert script.on_air("b")
            send(signal.SIGTERM)
    assert [service.ended for service in script.built] == ["failed", "stopped", "stopped"]


async def test_a_changed_station_whose_new_settings_cannot_be_built_stays_on_air_as_it_was(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script = Script()
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            host = await run_host(script, tg, ["a", "b"])
            script.build_errors["a"] = [StartupError("IDLE_AVATAR_PATH: not a picture", setting="IDLE_AVATAR_PATH")]
            script.wanted = [Station("a", settings_for("a").model_copy(update={"fps": 25})), *stations("b")]
            send(signal.SIGHUP)
            await eventually(lambda: "not a picture" in caplog.text)
            await anyio.sleep(0.2)
            assert script.of("a")[0].on_air and script.of("a")[0].ended is None, "the station left the air"
            assert host.on_air["a"].service.settings.fps == 30
            # The file is fixed: the next reload applies the change.
            send(signal.SIGHUP)
            await eventually(lambda: len(script.of("a")) == 2 and script.on_air("a"))
            assert host.on_air["a"].service.settings.fps == 25
            send(signal.SIGTERM)
    assert [service.ended for service in script.of("a")] == ["stopped", "stopped"]
    assert [service.ended for service in script.of("b")] == ["stopped"]


async def test_a_changed_station_whose_new_avatar_shows_no_face_stays_on_air_as_it_was(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script = Script()
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            host = await run_host(script, tg, ["a"])
            script.engine_errors["a"] = StartupError("warp engine: no face found in the avatar", setting="STATIC_VIDEO_PATH")
            script.wanted = [Station("a", settings_for("a").model_copy(update={"fps": 25}))]
            send(signal.SIGHUP)
            await eventually(lambda: "no face found" in caplog.text)
            await anyio.sleep(0.2)
            old, replacement = script.of("a")
            assert old.on_air and old.ended is None, "the station left the air"
            assert replacement.discarded and replacement.ended is None, "the replacement was not let go of"
            assert host.on_air["a"].service is old
            assert "station 'a': STATIC_VIDEO_PATH: warp engine: no face found" in caplog.text
            send(signal.SIGTERM)
    assert old.ended == "stopped"


async def test_a_fault_of_ours_while_building_on_reload_ends_no_station(caplog: pytest.LogCaptureFixture) -> None:
    # Not a StartupError: a bug in a build or in an engine's preparation. The stations on air,
    # the one being changed included, stay on air, and later reloads still apply.
    script = Script()
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            host = await run_host(script, tg, ["a", "b"])
            script.build_errors["a"] = [KeyError("oops")]
            script.build_errors["c"] = [ZeroDivisionError("oops")]
            script.wanted = [Station("a", settings_for("a").model_copy(update={"fps": 25})), *stations("b", "c")]
            send(signal.SIGHUP)
            await eventually(lambda: "station c could not start" in caplog.text)
            assert "station a could not be built" in caplog.text
            assert script.of("a")[0].on_air and script.of("b")[0].on_air and "c" not in host.on_air
            send(signal.SIGHUP)  # the faults are gone: this reload applies
            await eventually(lambda: script.on_air("c") and len(script.of("a")) == 2 and script.on_air("a"))
            send(signal.SIGTERM)
    assert all(service.ended == "stopped" for service in script.built)


async def test_a_station_an_operator_stopped_stays_off_air_when_rebuilt(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rebuild is ours, the stop was the operator's: the station rebuilt after a failure, or
    changed on SIGHUP, begins stopped (it used to go back on air and play what had been queued
    while it was stopped); only the operator's start puts it back. Others are untouched."""
    monkeypatch.setattr(host_module, "RESTART_BACKOFF_S", (0.05,))
    script = Script()
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await run_host(script, tg, ["a", "b"])
            script.of("a")[0].stopped_by_operator = True  # the operator's `stop`
            script.of("a")[0].fail()
            await eventually(lambda: len(script.of("a")) == 2 and script.on_air("a"))
            assert script.of("a")[1].stopped_by_operator
            changed = [Station("a", settings_for("a").model_copy(update={"fps": 25})), *stations("b")]
            script.wanted = changed
            send(signal.SIGHUP)
            await eventually(lambda: len(script.of("a")) == 3 and script.on_air("a"))
            assert script.of("a")[2].stopped_by_operator
            assert len(script.of("b")) == 1 and not script.of("b")[0].stopped_by_operator
            send(signal.SIGTERM)
