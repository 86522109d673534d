"""One frozen snapshot of a running service: what the operator's pages (/healthz, the studio,
the scrape-time gauges of /metrics) read.

The pages take a `StatusSource` (a function returning a fresh snapshot) instead of the service
itself, so nothing under poc.ops imports poc.app: app.py builds the snapshot from its parts
(Service.status) and hands the function in. A snapshot is taken on the event loop and never
changes afterwards, so a page can read it field by field without seeing half an update.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import attrs


@attrs.frozen(kw_only=True)
class ServiceStatus:
    state: str  # the statechart's current state id
    frame: int  # the media clock's next frame
    on_air: bool  # frames are leaving for the RTMP server
    stopped: bool  # off air on purpose (the `stop` control) until a `start`
    uptime_seconds: float
    writer_restarts: int
    dropped_frames: int
    underrun_frames: int
    queued_messages: int
    queued_seconds: float  # speech scheduled ahead of the clock
    rabbitmq_connected: bool
    rabbitmq_reconnects: int
    output_fps: float | None  # None before the first measuring window closed
    last_latency_seconds: float | None  # the newest message's dequeue -> on-air delay
    mean_latency_seconds: float | None
    messages: Mapping[str, int]  # messages by outcome (every poc.jobs.Outcome value present)
    speech: Mapping[str, Any]  # the speech wrapper's report: which voice serves, which rest
    face: str  # the hosted face vendor, else the local engine's name
    # seconds until a hosted face vendor that failed repeatedly is asked again (the local engine
    # speaks meanwhile); None while it is asked
    face_resting_seconds: float | None = None

    @property
    def reconnecting(self) -> bool:
        """Off air after ffmpeg was restarted at least once: the writer is retrying the RTMP
        server. Off air before any restart is still starting up; off air on purpose is not this."""
        return not self.on_air and not self.stopped and self.writer_restarts > 0


StatusSource = Callable[[], ServiceStatus]
