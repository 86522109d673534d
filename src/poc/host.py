"""The process: one or many stations (streams) side by side, and what they share.

A station is one `Service`: its own media clock, compositor, statechart, ffmpeg writer and queue
consumer. The host owns what there is one of per process: the operator's HTTP port, the signals,
the heap trim. Without a stations file it runs one station exactly as poc always has (same pages,
same logs, same exit codes); with one (poc.stations) it runs them all, each supervised alone:

- Start-up: stations go on air one after another, each once the previous one streams, so their
  start-up work (landmarks, voice, engine) never starves a clock already running. Any station
  that cannot start stops start-up with one line naming it: a file that does not run as written
  is better refused whole than half-served.
- On air: a station whose tasks fail is taken off air, logged, and rebuilt after a back-off;
  the broker requeues what it held. The other stations never notice.
- SIGINT/SIGTERM: every station stops gracefully at once (the message on air may finish; the
  unplayed ones are requeued); a second signal cuts the wait short.
- SIGHUP: the stations file is read again. New stations go on air, removed ones stop gracefully,
  changed ones are stopped and started again, unchanged ones are not touched. A file that no
  longer loads is refused with one line and nothing changes; a new station that cannot start is
  logged and left out.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Callable, Sequence

import anyio
import attrs
from anyio.abc import TaskGroup, TaskStatus
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from poc.app import Service
from poc.config import ConfigError, Settings
from poc.errors import StartupError, describe_error, find_startup_error
from poc.ops.batch_metrics import BatcherSource, export_batches, loaded_models_batchers
from poc.ops.http import serve
from poc.ops.memory import release_freed_memory
from poc.stations.current import CURRENT_STATION

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # after a station failed on air; the last repeats
STEADY_S = 60.0  # on air this long before failing: the back-off starts over


def _backoff(failures: int) -> float:
    """Seconds to wait before rebuilding a station after its `failures`-th failure in a row."""
    return RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S)) - 1]


class _StartedFlag:
    """A task status that remembers whether the station reported itself started, and passes the
    first report on (to the host's `tg.start`, which waits for it)."""

    def __init__(self, forward: TaskStatus[None] | None) -> None:
        self.forward = forward
        self.is_started = False

    def started(self, value: None = None) -> None:
        self.is_started = True
        if self.forward is not None:
            self.forward.started()
            self.forward = None


class StationStartupError(StartupError):
    """A station of the stations file cannot start: its line names the station, then the setting."""

    def __init__(self, station: str, cause: StartupError) -> None:
        super().__init__(str(cause), setting=cause.setting)
        self.station = station
        self.cause = cause

    def line(self) -> str:
        return f"station '{self.station}': {self.cause.line()}"


@attrs.define(eq=False)
class _OnAir:
    """One station the host runs: the station as the file gave it and its current Service."""

    name: str
    station: object | None  # poc.stations.Station; None for the single stream
    service: Service
    scope: anyio.CancelScope = attrs.field(factory=anyio.CancelScope)
    done: anyio.Event = attrs.field(factory=anyio.Event)
    view: object | None = None  # its poc.ops.stations_http.StationView, made once per Service
    view_of: Service | None = None  # the Service `view` was made for
    rebuilding: bool = False  # off air after a failure, waiting to be rebuilt
    stopping: bool = False  # asked to stop (a signal, or removed/changed by a reload): never rebuilt


class Host:
    """Runs stations until SIGINT/SIGTERM (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        reload: Callable[[], Sequence[object]] | None = None,
        build: Callable[[Settings], Service] = Service,
    ) -> None:
        self.settings = settings  # the process's: HTTP port, studio token, log level
        self.reload = reload  # re-reads the stations file; None for the single stream
        # Makes a station's Service from its settings, in a worker thread (tests pass stations
        # whose failures they control: the supervision is what they test).
        self.build = build
        self.batchers: BatcherSource = loaded_models_batchers  # whose counters /metrics shows
        self.on_air: dict[str, _OnAir] = {}
        self._tg: TaskGroup | None = None
        self._starting = anyio.CancelScope()  # start-up, cancelled by a signal that arrives during it
        self._started = anyio.Event()  # start-up is over (done or cancelled)
        self._stopping = False  # SIGINT/SIGTERM received
        self._finished = anyio.Event()  # every station has stopped

    @property
    def single(self) -> bool:
        return self.reload is None

    async def run(self, stations: Sequence[object] | None = None) -> int:
        """Single stream when `stations` is None (self.settings is its settings)."""
        signals = [signal.SIGINT, signal.SIGTERM] + ([] if self.single else [signal.SIGHUP])
        # Taken over before anything starts: a SIGHUP during start-up is applied once every
        # station is on air (not the default action, which ends the process), and a SIGTERM
        # ends start-up cleanly, closing what is already on air.
        with anyio.open_signal_receiver(*signals) as received:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                # Part of a long run's RSS growth is glibc keeping pages freed between threads
                # resident; this gives them back (docs/reliability.md, ops/memory.py).
                tg.start_soon(release_freed_memory)
                tg.start_soon(self._watch_signals, received)
                with self._starting:
                    await self._start(tg, stations)
                self._started.set()
                await self._finished.wait()
                tg.cancel_scope.cancel()
        return 0  # a station that cannot start raises instead (a StartupError: exit 2)

    async def _start(self, tg: TaskGroup, stations: Sequence[object] | None) -> None:
        if stations is None:
            service = await self._build_unless_stopped(self.settings, None)
            if service is None:  # a signal came while it was being built
                return
            await self._serve_http(tg, service)
            await tg.start(self._supervise, "", None, service)
            return
        await self._serve_http(tg, None)
        for station in stations:
            service = await self._build(station)
            if service is None:  # a signal came while it was being built
                return
            await tg.start(self._supervise, station.name, station, service)
        log.info("%d stations on air: %s", len(stations), ", ".join(s.name for s in stations))

    async def _build(self, station) -> Service | None:
        """The station's Service, its start-up errors naming it; None if a signal came meanwhile."""
        token = CURRENT_STATION.set(station.name)
        try:
            return await self._build_unless_stopped(station.settings, None)
        except StartupError as error:
            raise StationStartupError(station.name, error) from None
        finally:
            CURRENT_STATION.reset(token)

    async def _serve_http(self, tg: TaskGroup, single: Service | None) -> None:
        settings = self.settings
        if not settings.http_port:
            return
        if single is not None:
            app = _SingleStationApp(settings, lambda: self._current(single), self.batchers)
        else:
            from poc.ops.stations_http import stations_app

            app = stations_app(settings, self.views, batchers=self.batchers)
        try:
            await tg.start(serve, app, settings.http_host, settings.http_port)
        except OSError as error:  # address in use, a host that is not ours
            raise ConfigError(
                f"HTTP_HOST/HTTP_PORT: cannot listen on {settings.http_host}:{settings.http_port}: "
                f"{error.strerror or error}"
            ) from None

    def _current(self, first: Service) -> Service:
        """The single station's Service on air now: a failed one is rebuilt as a new Service."""
        entry = self.on_air.get("")
        return first if entry is None else entry.service

    def views(self) -> dict[str, object]:
        """What the operator's port shows: every station on air, by name (called per request)."""
        from poc.ops.stations_http import StationView

        for entry in self.on_air.values():
            if entry.view_of is not entry.service:  # a new view per Service: its pages are rebuilt
                service = entry.service
                entry.view = StationView(
                    name=entry.name,
                    settings=service.settings,
                    status=service.status,
                    metrics=service.metrics,
                    chart=service.pipeline.chart,
                )
                entry.view_of = service
        return {name: entry.view for name, entry in self.on_air.items()}

    async def _supervise(
        self, name: str, station, service: Service, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run one station until it is asked to stop; rebuild it when it fails on air. Reports
        started once the station streams and consumes; a failure before that is a start-up
        error (raised, so the caller decides), one after it is survived."""
        token = CURRENT_STATION.set(name or None)
        entry = _OnAir(name, station, service)
        self.on_air[name] = entry
        first = _StartedFlag(task_status)
        failures = 0
        try:
            with entry.scope:
                while True:
                    flag = first if failures == 0 else _StartedFlag(None)
                    went_on_air = time.monotonic()
                    try:
                        await entry.service.run(task_status=flag)
                        startup = entry.service.startup_error
                        if startup is not None and first.is_started and not entry.stopping:
                            # A rebuild whose engine or voice would not load: it may load on a
                            # later try (a card busy for a moment), and the station must not
                            # leave the air without a word.
                            raise startup
                    except Exception as error:
                        if not first.is_started:
                            startup = find_startup_error(error)
                            if startup is not None:
                                raise self._named(name, startup) from None
                            raise
                        if entry.stopping:
                            # It was asked to stop and failed on the way: stopped all the same.
                            log.error("station failed while stopping (%s: %s)", type(error).__name__, error,
                                      exc_info=error)  # fmt: skip
                            return
                        if time.monotonic() - went_on_air > STEADY_S:
                            failures = 0  # it had been on air for a while: start the back-off over
                        failures += 1
                        log.error("station failed on air (%s: %s); rebuilding it in %.0f s", type(error).__name__,
                                  error, _backoff(failures), exc_info=error)  # fmt: skip
                        # While rebuilding, a stop cancels entry.scope (_ask_to_stop): the back-off
                        # ends there, a build under way is let go of, nothing goes back on air.
                        entry.rebuilding = True
                        while True:
                            await anyio.sleep(_backoff(failures))
                            try:
                                rebuilt = await self._build_unless_stopped(entry.service.settings, entry)
                            except Exception as build_error:  # a file gone since: the others stay on air
                                failures += 1
                                log.error("station could not be rebuilt (%s); trying again in %.0f s",
                                          describe_error(build_error), _backoff(failures))  # fmt: skip
                                continue
                            break
                        if rebuilt is None:
                            return
                        _keep_an_operators_stop(entry.service, rebuilt)
                        entry.service = rebuilt
                        entry.rebuilding = False
                        continue
                    startup = entry.service.startup_error
                    if startup is not None and not first.is_started:
                        raise self._named(name, startup)
                    return  # stopped on request
        finally:
            if self.on_air.get(name) is entry:
                del self.on_air[name]
            entry.done.set()
            CURRENT_STATION.reset(token)

    async def _build_unless_stopped(self, settings: Settings, entry: _OnAir | None) -> Service | None:
        """A new Service, or None (and the one built let go of) if a stop came meanwhile. The
        build runs to its end whatever happens: a thread cannot be cancelled, and a Service
        dropped unreleased would keep its port bound against the one built after it."""
        with anyio.CancelScope(shield=True):
            service = await anyio.to_thread.run_sync(self.build, settings)
            if self._stopping or (entry is not None and entry.stopping):
                await anyio.to_thread.run_sync(service.discard)
                return None
        return service

    def _named(self, name: str, error: StartupError) -> StartupError:
        return error if self.single else StationStartupError(name, error)

    async def _watch_signals(self, received) -> None:
        """SIGHUP: reload (once start-up is over). SIGINT/SIGTERM: stop every station gracefully
        (during start-up: end it); a second one cuts the graceful stop short."""
        assert self._tg is not None
        # Room for one: SIGHUPs that arrive while a reload is pending or running make one more.
        wanted, requests = anyio.create_memory_object_stream[None](1)
        self._tg.start_soon(self._reload_on_request, requests)
        async for signum in received:
            if signum == signal.SIGHUP:
                try:
                    wanted.send_nowait(None)
                except anyio.WouldBlock:
                    pass  # one is already pending: it will read the file as it is by then
                continue
            if self._stopping:
                log.info("received %s again: stopping now", signal.Signals(signum).name)
                for entry in list(self.on_air.values()):
                    entry.service.cut_short()
                continue
            log.info("received %s", signal.Signals(signum).name)
            self._stopping = True
            self._starting.cancel()
            self._tg.start_soon(self._stop_all)

    async def _reload_on_request(self, requests) -> None:
        await self._started.wait()
        async for _ in requests:
            if self._stopping:
                return
            await self._reload()

    async def _stop_all(self) -> None:
        self._stopping = True
        # Until none is left: a station a reload was starting as the signal came goes on air
        # after the first round, and is stopped gracefully too rather than cancelled.
        while entries := [entry for entry in self.on_air.values() if not entry.done.is_set()]:
            for entry in entries:
                self._ask_to_stop(entry)
            for entry in entries:
                await entry.done.wait()
        self._finished.set()

    @staticmethod
    def _ask_to_stop(entry: _OnAir) -> None:
        entry.stopping = True
        entry.service.request_stop()
        if entry.rebuilding:  # nothing on air to stop: end its back-off (or its rebuild) instead
            entry.scope.cancel()

    async def _reload(self) -> None:
        """SIGHUP: read the stations file again and bring the running stations in line with it."""
        assert self.reload is not None and self._tg is not None
        try:
            wanted = await anyio.to_thread.run_sync(self.reload)
        except StartupError as error:
            log.error("SIGHUP: the stations file was not applied: %s", error.line())
            return
        from poc.ops.logs import add_secrets
        from poc.stations import log_secrets

        add_secrets(log_secrets(wanted))  # a new station's stream key, API keys... never its name
        by_name = {station.name: station for station in wanted}
        removed = [entry for name, entry in self.on_air.items() if name not in by_name]
        changed = [entry for name, entry in self.on_air.items() if name in by_name and _changed(entry, by_name[name])]
        added = [station for name, station in by_name.items() if name not in self.on_air]
        log.info("SIGHUP: %d stations added, %d removed, %d changed, %d unchanged", len(added), len(removed),
                 len(changed), len(self.on_air) - len(removed) - len(changed))  # fmt: skip
        for entry in removed:
            log.info("station %s: stopping (removed)", entry.name)
            self._ask_to_stop(entry)
        for entry in removed:
            await entry.done.wait()
        for entry in changed:
            await self._replace(entry, by_name[entry.name])
        for station in added:
            await self._start_later(station)

    async def _replace(self, entry: _OnAir, station) -> None:
        """A changed station: its new Service and face engine are built while the old one stays
        on air, so new settings that cannot be built (an avatar that is not a picture or shows
        no face, an unknown voice or one whose file does not load) leave the station streaming
        as it was rather than off air until the file is fixed."""
        if self._stopping:
            return
        stays = "it stays on air as it was"
        try:
            service = await self._build(station)
        except Exception as error:
            _log_reload_failure(station.name, "could not be built", error, stays)
            return
        if service is None:  # a signal came while it was being built
            return
        try:
            await _prepare(station.name, service)
        except Exception as error:
            await self._let_go(service)
            _log_reload_failure(station.name, "could not be prepared", error, stays)
            return
        if self._stopping:  # a signal came while it was being prepared: it never goes on air
            await self._let_go(service)
            return
        log.info("station %s: stopping (changed)", entry.name)
        self._ask_to_stop(entry)
        try:
            await entry.done.wait()
        except anyio.get_cancelled_exc_class():  # the host is ending (a signal came meanwhile)
            await self._let_go(service)
            raise
        _keep_an_operators_stop(entry.service, service)  # as it is now, after the old one stopped
        await self._start_later(station, service)

    @staticmethod
    async def _let_go(service: Service) -> None:
        """Discard a Service that will never go on air (its engine, its ports), even while the
        host is being cancelled: the process's task group is cancelled once every station on
        air has stopped, which may be before a replacement's build is over."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(service.discard)

    async def _start_later(self, station, service: Service | None = None) -> None:
        """A station added on reload (or its `service` built already): one that cannot start is
        logged and left out."""
        assert self._tg is not None
        if self._stopping:
            if service is not None:
                await self._let_go(service)
            return
        try:
            if service is None:
                service = await self._build(station)
            if service is None:  # a signal came while it was being built: it never goes on air
                return
            await self._tg.start(self._supervise, station.name, station, service)
        except Exception as error:
            _log_reload_failure(station.name, "could not start", error, "the other stations go on")
            return
        if service.stopped_by_operator:
            log.info("station %s: running, off air as an operator stopped it (send start)", station.name)
        else:
            log.info("station %s: on air", station.name)


def _keep_an_operators_stop(old: Service, new: Service) -> None:
    """A station rebuilt (after a failure, or changed on SIGHUP) stays off air if an operator
    had stopped it: the rebuild is ours, the stop was theirs, and only their `start` undoes it
    (the rebuild used to go back on air and play what was queued meanwhile)."""
    if old.stopped_by_operator:
        new.stay_stopped()


async def _prepare(name: str, service: Service) -> None:
    """Make a replacement's face engine and voice ready, its lines logged under the station's
    name like the rest of its work (anyio copies the context into the worker thread)."""
    token = CURRENT_STATION.set(name)
    try:
        with anyio.CancelScope(shield=True):  # a thread cannot be cancelled: wait, then let go
            await anyio.to_thread.run_sync(service.prepare)
    finally:
        CURRENT_STATION.reset(token)


def _changed(entry: _OnAir, wanted) -> bool:
    """Whether a station on air must be rebuilt for `wanted` (its entry in the file just read):
    other settings, or a file it reads (an avatar, a voice) replaced under the same name."""
    if entry.station is None:
        return True
    if entry.station.settings != wanted.settings:
        return True
    # Stations made by hand (tests of the supervision) may carry no stamps: nothing to compare.
    return getattr(entry.station, "files", ()) != getattr(wanted, "files", ())


def _log_reload_failure(name: str, what: str, error: Exception, outcome: str) -> None:
    """One line for a station a reload could not build, prepare or start. A StartupError is the
    file's fault and says so naming the station; anything else is a fault of ours, logged with
    its traceback, and neither ends the stations on air."""
    if isinstance(error, StartupError):
        named = error if isinstance(error, StationStartupError) else StationStartupError(name, error)
        log.error("SIGHUP: %s; %s", named.line(), outcome)
    else:
        log.error("SIGHUP: station %s %s (%s); %s", name, what, describe_error(error), outcome, exc_info=error)


async def run_single(settings: Settings) -> int:
    """One stream from the environment: exactly poc's behaviour without a stations file."""
    return await Host(settings).run()


async def run_stations(settings: Settings, stations: Sequence[object], reload: Callable[[], Sequence[object]]) -> int:
    """Many streams (poc.stations): `settings` is the process's, `reload` re-reads the file."""
    from poc.ops.logs import show_station

    show_station(CURRENT_STATION)
    return await Host(settings, reload).run(stations)



class _SingleStationApp:
    """The operator's app for one station, built anew for each Service that comes on air: a
    station rebuilt after a failure is a new Service with its own status, registry and chart,
    and /healthz, /metrics and the studio must follow it (not report the dead one forever).
    The old app's open responses (the studio's event stream) end at the switch; a browser's
    EventSource reconnects to the new one."""

    def __init__(self, settings: Settings, current: Callable[[], Service], batchers: BatcherSource) -> None:
        self.settings = settings
        self.current = current
        self.batchers = batchers
        self.state = self  # serve() ends open responses at shutdown through app.state.open_responses
        self.open_responses = self
        self._built_for: Service | None = None
        self._app: Starlette | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = self.current()
        if service is not self._built_for:  # built on the event loop: the studio's chart listener needs it
            from poc.ops.operator import operator_app

            self.close()
            # the process's batcher series, served once: this station's registry is the only one
            export_batches(service.metrics.registry, source=self.batchers)
            self._app = operator_app(self.settings, service.status, service.metrics, service.pipeline.chart)
            self._built_for = service
        assert self._app is not None
        await self._app(scope, receive, send)

    def close(self) -> None:
        """End the open responses of the app built so far (at shutdown, or when replaced)."""
        if self._app is not None:
            self._app.state.open_responses.close()
