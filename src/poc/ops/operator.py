"""The operator's port in one app: health and metrics (always open), the studio (behind
STUDIO_TOKEN when one is set), under ops/http.py's request guard."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware

from poc.config import Settings
from poc.metrics import Metrics
from poc.ops.auth import StudioTokenGuard
from poc.ops.health import OPEN_PATHS, health_routes
from poc.ops.http import build_app
from poc.ops.status import StatusSource
from poc.ops.studio import Publisher, studio_routes
from poc.statechart import StreamChart


def operator_app(
    settings: Settings,
    status: StatusSource,
    metrics: Metrics,
    chart: StreamChart,
    *,
    publisher: Publisher | None = None,
) -> Starlette:
    """Build on the event loop (the studio's chart listener wakes event streams from there).
    `status` returns a fresh snapshot per call; `publisher` is for tests (default: RabbitMQ)."""
    routes = [*health_routes(status, metrics), *studio_routes(settings, status, chart, publisher=publisher)]
    middleware = []
    if settings.studio_token is not None:
        token = settings.studio_token.get_secret_value()
        middleware.append(Middleware(StudioTokenGuard, token=token, open_paths=OPEN_PATHS))
    return build_app(routes, middleware)
