"""Prometheus metrics for one service instance (its own registry, so tests can run several).

The core (pipeline, compositor, writer, speech wrapper) writes here; /metrics serves the registry.
The few figures the operator's pages show (latest on-air latency, output fps, outcomes) are also
kept as plain numbers in `Figures`, so nothing has to read them back out of Prometheus (a
histogram keeps only sums and counts: the latest value cannot be read back from it).
"""

from __future__ import annotations

from collections import Counter as Tally

import attrs
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STATES = ("idle", "processing", "transitioning", "talking")
# Seconds, for anything a viewer waits on (a message to go on air, a voice to start).
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


@attrs.define
class Figures:
    """Plain copies of what the studio and /healthz report; updated with the metrics they mirror."""

    output_fps: float | None = None  # None until the first 2 s window has been measured
    last_latency_seconds: float | None = None  # the newest message's dequeue -> on-air delay
    latency_sum: float = 0.0
    latency_count: int = 0
    outcomes: Tally[str] = attrs.field(factory=Tally)

    @property
    def mean_latency_seconds(self) -> float | None:
        return self.latency_sum / self.latency_count if self.latency_count else None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.state = Gauge("poc_state", "1 for the statechart's current state", ["state"], registry=r)
        self.frames = Counter("poc_frames_total", "Frames produced by the media clock", registry=r)
        self.output_fps = Gauge("poc_output_fps", "Frames per second written to ffmpeg (last 2 s)", registry=r)
        self.underruns = Counter(
            "poc_underrun_frames_total",
            "Talking frames not rendered in time (held or substituted; audio kept flowing)",
            registry=r,
        )
        self.audio_underruns = Counter(
            "poc_audio_underrun_frames_total", "Talking frames whose speech had not arrived", registry=r
        )
        self.dropped = Counter(
            "poc_dropped_frames_total", "Frames the writer could not send (encoder slow or down)", registry=r
        )
        self.engine_errors = Counter("poc_engine_errors_total", "Face engine failures (idle face shown)", registry=r)
        self.writer_restarts = Counter("poc_writer_restarts_total", "ffmpeg restarts", registry=r)
        self.clock_rebases = Counter(
            "poc_clock_rebases_total",
            "Stalls longer than the clock catches up on: it skipped ahead, so the stream's time "
            "fell that much behind the wall clock",
            registry=r,
        )
        self.rtmp_up = Gauge("poc_rtmp_up", "1 while frames are leaving for the RTMP server", registry=r)
        self.stream_on_air = Gauge(
            "poc_stream_on_air", "0 while an operator has taken the stream off air (control stop), else 1", registry=r
        )
        self.stream_on_air.set(1)
        self.amqp_reconnects = Gauge("poc_amqp_reconnects", "RabbitMQ reconnections since start", registry=r)
        self.amqp_connected = Gauge("poc_amqp_connected", "1 while connected to RabbitMQ", registry=r)
        self.messages = Counter("poc_messages_total", "Messages by outcome", ["outcome"], registry=r)
        self.queued_speech = Gauge(
            "poc_queued_speech_seconds", "Speech scheduled ahead of the clock", registry=r
        )
        self.tick_lateness = Histogram(
            "poc_tick_lateness_seconds",
            "How late each frame tick woke up after its deadline",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
            registry=r,
        )
        self.latency = Histogram(
            "poc_message_latency_seconds",
            "Per-stage latency of a message, from dequeue",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tts_requests = Counter(
            "poc_tts_requests_total", "Speech requests per provider (one per sentence attempt)", ["provider"], registry=r
        )
        self.tts_failures = Counter(
            "poc_tts_failures_total",
            "Speech failures per provider and kind (auth, throttled, unavailable, stalled, bad_audio, invalid, error)",
            ["provider", "kind"],
            registry=r,
        )
        self.tts_first_audio = Histogram(
            "poc_tts_first_audio_seconds",
            "Time from a speech request to the provider's first audio",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.face_api_requests = Counter(
            "poc_face_api_requests_total", "Videos asked of a hosted face API", ["vendor"], registry=r
        )
        self.face_api_failures = Counter(
            "poc_face_api_failures_total",
            "Hosted face API failures by kind (the local engine spoke instead)",
            ["vendor", "kind"],
            registry=r,
        )
        self.face_api_seconds = Histogram(
            "poc_face_api_seconds",
            "From asking a hosted face API for a video to its frames being ready",
            ["vendor"],
            buckets=(0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0),
            registry=r,
        )
        self.figures = Figures()
        self.set_state("idle")

    def message_on_air(self, delay: float) -> None:
        """A message went on air `delay` seconds after it was dequeued."""
        self.latency.labels(stage="on_air").observe(delay)
        self.figures.last_latency_seconds = delay
        self.figures.latency_sum += delay
        self.figures.latency_count += 1

    def message_settled(self, outcome: str) -> None:
        """A message is done with (its outcome: poc.jobs.Outcome's value)."""
        self.messages.labels(outcome=outcome).inc()
        self.figures.outcomes[outcome] += 1

    def set_output_fps(self, fps: float) -> None:
        """Frames per second handed to ffmpeg over the last window (0 while stopped)."""
        self.output_fps.set(fps)
        self.figures.output_fps = fps

    def set_state(self, current: str) -> None:
        for name in STATES:
            self.state.labels(state=name).set(1 if name == current else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
