"""One operator port for many stations: each station's studio, health and metrics, and a list.

Routes (STUDIO_TOKEN, when set, guards all but the health and metrics ones):

- GET /healthz: every station's report (poc.ops.health.health_report) and the names of the
  unhealthy ones. 200 while at least one station is healthy; 503 only when none is, or when
  there are no stations at all. A liveness probe acts on the whole process: restarting it
  because one station's RTMP server is away would take every other station off air too. Each
  station's own health is for alerting, per station.
- GET /stations/NAME/healthz: that station's report alone, 200/503 by that station only, as a
  single station's /healthz is.
- GET /metrics: every station's series, each sample labelled station="NAME", and poc_stations
  (ops/station_metrics.py). GET /stations/NAME/metrics: that station's registry alone.
- GET /: the station list (static/stations.html), kept fresh from GET /api/stations.
- /stations/NAME/...: that station's studio exactly as one station's is at / (ops/studio.py);
  its page uses relative URLs, so it works under the prefix. /stations/NAME is sent on to
  /stations/NAME/ (the page's relative URLs need the slash).

Stations come and go while the process runs (a reload), so `stations()` is asked on every
request instead of building a route table once. A station's studio (its routes and its chart
listener) is built the first time it is asked for, on the event loop, and kept while the same
StationView is current: a reloaded station is a new view and gets a new studio. A studio whose
view is no longer current is dropped and its open event streams are ended (a browser's
EventSource then reconnects to the new studio, or learns the station is gone).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping
from urllib.parse import quote

import attrs
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, Router, get_route_path
from starlette.types import ASGIApp, Receive, Scope, Send

from poc.config import Settings
from poc.metrics import Metrics
from poc.ops.auth import StudioTokenGuard
from poc.ops.batch_metrics import BatcherSource, loaded_models_batchers
from poc.ops.health import OPEN_PATHS, health_report, health_routes
from poc.ops.http import OpenResponses, build_app, json_error
from poc.ops.station_metrics import StationsMetricsApp
from poc.ops.status import ServiceStatus, StatusSource
from poc.ops.studio import EVENTS_PATH, Publisher, studio_routes
from poc.statechart import StreamChart
from poc.stations.current import CURRENT_STATION

log = logging.getLogger(__name__)

STATIONS_PREFIX = "/stations"
# Each station's health and metrics are as open as the process's (a full match of the path).
OPEN_STATION_PATHS = r"/stations/[^/]+/(?:healthz|metrics)"
STATIC_DIR = Path(__file__).with_name("static")
# The list page's own files (the station pages get theirs from their studio).
LIST_FILES = {
    "api.js": "text/javascript; charset=utf-8",
    "studio.css": "text/css; charset=utf-8",
    "stations.js": "text/javascript; charset=utf-8",
}


@attrs.frozen(eq=False)
class StationView:
    """What the operator's port reads from one running station. Compared by identity: a
    reloaded station is a new view (and gets a new studio)."""

    name: str
    settings: Settings  # that station's settings (its queue, limits, RTMP URL for the preview)
    status: StatusSource  # a fresh snapshot per call, called on the event loop
    metrics: Metrics  # that station's own registry
    chart: StreamChart


StationsSource = Callable[[], Mapping[str, StationView]]


def stations_app(
    settings: Settings,
    stations: StationsSource,
    *,
    publisher_for: Callable[[StationView], Publisher] | None = None,
    batchers: BatcherSource = loaded_models_batchers,
) -> Starlette:
    """The operator's app for many stations. `settings` is the process's (HTTP_HOST/PORT,
    STUDIO_TOKEN); `stations()` is asked per request, on the event loop. `publisher_for` gives a
    station's studio its publisher (for tests; default: RabbitMQ under that station's settings);
    `batchers` lists the MuseTalk batchers whose counters /metrics shows (default: the process's)."""
    studios = _Studios(stations, publisher_for)
    routes = [
        Route("/healthz", _overall_health(studios.current), methods=["GET"]),
        Route("/metrics", StationsMetricsApp(studios.current, batchers), methods=["GET"]),
        Route("/", _file_handler("stations.html", "text/html; charset=utf-8"), methods=["GET"]),
        *(Route(f"/static/{name}", _file_handler(name, kind), methods=["GET"]) for name, kind in LIST_FILES.items()),
        Route("/api/stations", _station_list(studios.current), methods=["GET"]),
        Route(STATIONS_PREFIX + "/{name}", _add_slash(studios.current), methods=["GET"]),
        Mount(STATIONS_PREFIX + "/{name}", app=studios),
    ]
    middleware = []
    if settings.studio_token is not None:
        token = settings.studio_token.get_secret_value()
        middleware.append(
            Middleware(StudioTokenGuard, token=token, open_paths=OPEN_PATHS, open_pattern=OPEN_STATION_PATHS)
        )
    return build_app(routes, middleware)


def station_path(name: str) -> str:
    """The path of a station's studio page."""
    return f"{STATIONS_PREFIX}/{quote(name, safe='')}/"


def stations_health(current: Mapping[str, StationView]) -> dict[str, Any]:
    """The /healthz body for many stations; `healthy` decides its status code (200, else 503)."""
    reports: dict[str, dict[str, Any]] = {}
    for name, view in sorted(current.items()):
        reports[name] = _report(name, view.status)
    unhealthy = [name for name, report in reports.items() if not report["healthy"]]
    body: dict[str, Any] = {"healthy": len(unhealthy) < len(reports), "stations": reports, "unhealthy": unhealthy}
    if not reports:
        body["reason"] = "no stations"
    elif not body["healthy"]:
        body["reason"] = "no station is healthy"
    return body


def _report(name: str, status: StatusSource) -> dict[str, Any]:
    try:
        return health_report(status())
    except Exception as error:  # one station's bug must not blind the probe to the others
        log.exception("HTTP: station %s: its status failed", name)
        return {"healthy": False, "error": f"status failed: {type(error).__name__}"}


def _overall_health(current: StationsSource) -> Callable[[Request], Awaitable[Response]]:
    async def healthz(request: Request) -> Response:
        body = stations_health(current())
        return JSONResponse(body, status_code=200 if body["healthy"] else 503)

    return healthz


def _station_list(current: StationsSource) -> Callable[[Request], Awaitable[Response]]:
    """GET /api/stations: one row per station, as the list page shows it."""

    async def listing(request: Request) -> Response:
        rows = []
        for name, view in sorted(current().items()):
            report = _report(name, view.status)
            row = {"name": name, "path": station_path(name).lstrip("/"), "healthy": report["healthy"]}
            if "error" in report:
                row["error"] = report["error"]
            else:
                row.update(state=report["state"], stream=report["stream"], queued_messages=report["queued_messages"],
                           queued_speech_seconds=report["queued_speech_seconds"])  # fmt: skip
            rows.append(row)
        return JSONResponse({"stations": rows})

    return listing


def _add_slash(current: StationsSource) -> Callable[[Request], Awaitable[Response]]:
    async def redirect(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in current():
            return _unknown(name)
        return RedirectResponse(station_path(name), status_code=307)

    return redirect


def _unknown(name: str) -> Response:
    return json_error(404, f"no station named {name!r}")


def _file_handler(name: str, content_type: str) -> Callable[[Request], Awaitable[Response]]:
    body = (STATIC_DIR / name).read_bytes()  # read once: the files ship with the package

    async def handler(request: Request) -> Response:
        return Response(body, media_type=content_type)

    return handler


@attrs.define
class _Studio:
    """One station's studio app, for the view it was built from."""

    view: StationView
    app: ASGIApp
    events: OpenResponses  # its open event streams, ended when the view is no longer current


class _Studios:
    """ASGI app under /stations/{name}: routes to the current view's studio, built on first use.

    Every look at the stations (`current`) also drops the studios of views no longer current,
    so a reload ends the old studio's event streams within a snapshot (each one reads its status
    every second, which goes through `current`)."""

    def __init__(self, stations: StationsSource, publisher_for: Callable[[StationView], Publisher] | None) -> None:
        self.stations = stations
        self.publisher_for = publisher_for
        self.built: dict[str, _Studio] = {}

    def current(self) -> Mapping[str, StationView]:
        """The stations now (as `stations()` gives them); stale studios are dropped on the way."""
        now = self.stations()
        for name, studio in list(self.built.items()):
            if now.get(name) is not studio.view:
                del self.built[name]
                studio.events.close()
        return now

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = scope["path_params"]["name"]
        view = self.current().get(name)
        if view is None:
            await _unknown(name)(scope, receive, send)
            return
        studio = self.built.get(name)
        if studio is None:
            studio = self.built[name] = self._build(view)
        # What the studio logs (a line sent, a client dropped) is on that station's behalf: the
        # log shared by every station must say which one, as its own tasks' lines do.
        token = CURRENT_STATION.set(name)
        try:
            if get_route_path(scope) == EVENTS_PATH:
                with studio.events.track():
                    await studio.app(scope, receive, send)
            else:  # short requests finish even across a reload: a say in flight gets its answer
                await studio.app(scope, receive, send)
        finally:
            CURRENT_STATION.reset(token)

    def _build(self, view: StationView) -> _Studio:
        def status() -> ServiceStatus:
            self.current()  # ends this studio's event streams if its view was replaced
            return view.status()

        publisher = self.publisher_for(view) if self.publisher_for is not None else None
        studio = studio_routes(view.settings, status, view.chart, publisher=publisher)
        routes = [*health_routes(view.status, view.metrics), *studio]
        return _Studio(view, Router(routes=routes, redirect_slashes=False), OpenResponses())
