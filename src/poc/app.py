"""The service: one task group that owns every long-lived task.

Start-up order matters to viewers: the stream goes on air first (idle avatar and silence),
then the consumer connects in the background; a broker that is down or refuses us never delays
or stops the picture. Heavy set-up (landmarks, TTS voice, model weights) happens before the
clock starts only where the stream needs it (the avatar); the voice loads in the background.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import anyio
from anyio.abc import TaskStatus

from poc.config import ConfigError, Settings, find_ffmpeg, redact_url
from poc.errors import StartupError
from poc.face.avatar import load_avatars
from poc.face.base import EngineError, FaceEngine
from poc.face.factory import create_engine
from poc.face.hosted_video import HostedFace
from poc.face.life import Life, LifeOptions
from poc.media.clock import FrameClock, Tick
from poc.media.compositor import Compositor, transition_frames_for
from poc.media.timeline import Schedule
from poc.media.writer import FfmpegWriter
from poc.metrics import Metrics
from poc.ops.status import ServiceStatus
from poc.pipeline import JobQueue, Pipeline, PipelineOptions
from poc.statechart import StreamChart

log = logging.getLogger(__name__)


class _StateToMetrics:
    """Statechart listener: mirrors the current state into metrics and the debug log."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.state = "idle"  # a plain str: read from the ffmpeg supervisor's thread

    def after_transition(self, event: str, source, target) -> None:
        self.state = target.id
        self.metrics.set_state(target.id)
        if source.id != target.id:
            log.debug("state %s -> %s (%s)", source.id, target.id, event)


class Service:
    """Everything one running stream needs, built from Settings."""

    def __init__(self, settings: Settings) -> None:
        from poc.speech.decode import decode_audio
        from poc.speech.factory import create_speech

        self.settings = settings
        self.metrics = Metrics()
        # STATIC_VIDEO_LOOP is the idle video's; a talking video of its own always cycles.
        self.avatar, self.talking_avatar = load_avatars(
            settings.idle_avatar_path, settings.talking_avatar_path, settings.width, settings.height,
            idle_max_frames=600 if settings.static_video_loop else 1, fps=settings.fps,
            idle_setting=settings.idle_avatar_setting, talking_setting=settings.talking_avatar_setting,
        )  # fmt: skip
        if self.talking_avatar is not self.avatar:
            log.info(
                "idle avatar %s and talking avatar %s differ: the switch cross-fades whole frames "
                "over %.2f s; one shared avatar gives the smoother switch (only the mouth moves)",
                settings.idle_avatar_path, settings.talking_avatar_path, settings.transition_seconds,
            )  # fmt: skip
        self.engine: FaceEngine | None = None  # built once the stream is on air (see run)
        self.exit_code = 0
        # A start-up error met after going on air (engine, voice warm-up): run() stops the
        # stream and run_service raises it for the CLI to report (one line, exit 2).
        self.startup_error: StartupError | None = None
        self.speech = create_speech(settings, self.metrics)
        self.audio_host = None  # serves speech to a face API that fetches it by URL (Tavus)
        self.hosted = self._build_hosted()
        # The job queue tracks each message until it settles: the statechart asks it whether
        # one waits, the compositor tells it when one goes on air and when one is settled.
        jobs = JobQueue(self.metrics)
        chart = StreamChart(has_pending=jobs.has_pending)
        state = _StateToMetrics(self.metrics)
        chart.add_listener(state)
        compositor = Compositor(
            self.avatar, chart, Schedule(), settings.sample_rate, settings.fps, self.metrics,
            on_started=jobs.started, on_settled=jobs.settled, talking_avatar=self.talking_avatar,
            transition_frames=transition_frames_for(settings.transition_seconds, settings.fps),
        )  # fmt: skip
        self.pipeline = Pipeline(
            jobs,
            compositor,
            self.speech,
            decode_audio,
            PipelineOptions(
                ahead_seconds=settings.speech_ahead_seconds, max_audio_seconds=settings.max_audio_seconds
            ),
            self.metrics,
            hosted=self.hosted,
            # Messages wait in the queue while the RTMP server is away instead of playing to
            # nobody and being acked as played (what is already prepared still plays).
            output_down=lambda: self.writer.in_outage,
        )
        self.writer = FfmpegWriter(
            find_ffmpeg(settings.ffmpeg_path),
            settings.rtmp_url,
            redact_url(settings.rtmp_url),
            settings.width,
            settings.height,
            settings.fps,
            settings.sample_rate,
            self.metrics,
            video_bitrate=settings.bitrate,
            audio_bitrate=settings.audio_bitrate,
            keyframe_seconds=settings.keyframe_seconds,
            channels=settings.tts_channels,
            queue_frames=settings.fps,  # 1 s: covers ffmpeg's start-up; idle frames are shared, not copied
            quiet=lambda: state.state == "idle",  # renews its session (20+ days) between messages
        )
        self.clock = FrameClock(settings.fps)
        self.source = None  # set in run(): the RabbitMQ adapter needs a running event loop
        # Stopped by an operator (the `stop` control): the clock and the compositor keep
        # running, so a start resumes on the same frame counter and avatar cycle; frames are
        # just not offered to the writer, which has closed ffmpeg cleanly.
        self.stopped_by_operator = False
        self.started_at = time.monotonic()
        self._stop_requested = anyio.Event()
        self._graceful: anyio.CancelScope | None = None

    async def run_clock(self, frames: int | None = None, on_tick: Callable[[Tick], None] | None = None) -> None:
        """The one place that paces the stream: one frame and its audio per tick, forever (or
        for `frames` ticks; `on_tick` lets a benchmark observe each tick)."""
        compositor, writer, metrics = self.pipeline.compositor, self.writer, self.metrics
        window_start, window_frames, window_sent = time.monotonic(), 0, 0
        rebases = self.clock.rebases
        async for tick in self.clock.ticks():
            if frames is not None and tick.frame >= frames:
                return
            if self.clock.rebases != rebases:
                # The process stalled past what the clock catches up on (a suspended VM, a
                # starved host): worth an operator's look, once per stall.
                metrics.clock_rebases.inc(self.clock.rebases - rebases)
                rebases = self.clock.rebases
                log.warning("the media clock was stalled for over %.0f s and skipped ahead", self.clock.max_catch_up)
            picture, audio = compositor.render(tick.frame)
            if not writer.stopped and writer.offer(picture, audio):
                window_sent += 1  # what the writer took: frames dropped in an outage do not count
            metrics.frames.inc()
            metrics.tick_lateness.observe(tick.lateness)
            window_frames += 1
            if window_frames == 2 * self.settings.fps:
                now = time.monotonic()
                metrics.set_output_fps(window_sent / (now - window_start))  # 0 while stopped
                window_start, window_frames, window_sent = now, 0, 0
            if on_tick is not None:
                on_tick(tick)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """On air until `request_stop()`: then no new messages, the one on air finishes within
        SHUTDOWN_DEADLINE_SECONDS (`cut_short()` ends that wait), unplayed ones are requeued, and
        ffmpeg finishes the FLV. The operator's HTTP port, signals and the heap trim belong to
        the process (poc.host), which may run several of these side by side."""
        from poc.messages import MessageLimits
        from poc.source.amqp import AmqpSource
        from poc.source.connection import AmqpSettings

        settings = self.settings
        # ffmpeg is spawned (and its first session awaited, up to 2 s) off the event loop.
        await anyio.to_thread.run_sync(self.writer.start, self.stopped_by_operator)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.run_clock)
                tg.start_soon(self._bring_to_life)
                await tg.start(self.pipeline.run)
                voice_ready = anyio.Event()
                tg.start_soon(self._warm_up_speech, voice_ready)
                try:
                    await self._engine_ready()
                except EngineError as error:
                    self.startup_error = error
                    self.exit_code = 2
                    tg.cancel_scope.cancel()
                    return
                self.pipeline.attach_engine(self.engine)
                # Consume once the voice is loaded too: a voice that cannot load stops start-up
                # before any message is taken (it loads while the engine builds, so no wait).
                await voice_ready.wait()
                self.source = AmqpSource(
                    AmqpSettings.from_settings(settings),
                    sink=self.pipeline,
                    limits=MessageLimits.from_settings(settings),
                    prefetch=settings.rabbitmq_prefetch,
                    reconnect_interval=settings.rabbitmq_reconnect_seconds,
                    stream=self,
                    metrics=self.metrics,
                    stopped=self.stopped_by_operator,
                )
                tg.start_soon(self.source.run)
                task_status.started()
                await self._stop_requested.wait()
                # Shielded: the graceful part settles every message; only cut_short() ends it early.
                with anyio.CancelScope(shield=True) as self._graceful:
                    await self._stop_gracefully()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._release()
            log.info("stopped")

    async def _release(self) -> None:
        """Close what the stream holds, each part even if another fails: a port left bound or
        a model left leased would stop the station rebuilt in its place. Off the event loop
        where it may wait (the engine's last lease finishes its batches, up to a minute), as
        other stations' clocks run on it."""
        closers = [("the ffmpeg writer", self.writer.close)]
        if self.engine is not None:
            closers.append(("the face engine", self.engine.close))
        if self.hosted is not None:
            closers.append(("the face service", self.hosted.close))
        if self.audio_host is not None:
            closers.append(("the audio host", self.audio_host.stop))
        for what, close in closers:
            try:
                await anyio.to_thread.run_sync(close)
            except Exception:
                log.exception("closing %s failed", what)

    def discard(self) -> None:
        """Let go of a Service that was built but will never run (its station was stopped while
        it was being built, or its engine would not build): what the constructor opened, the
        face API's client and the port that serves it speech, which the station built in its
        place needs, and the engine if build_engine made one."""
        if self.engine is not None:
            self.engine.close()
            self.engine = None
        if self.hosted is not None:
            self.hosted.close()
        if self.audio_host is not None:
            self.audio_host.stop()

    def request_stop(self) -> None:
        """Begin the graceful stop (SIGINT/SIGTERM, or the station removed from the file)."""
        self._stop_requested.set()

    def cut_short(self) -> None:
        """End the graceful stop now (a second signal): the message on air is not waited for;
        unplayed messages still go back to the queue, as the broker does for unacked ones."""
        self._stop_requested.set()
        if self._graceful is not None:
            self._graceful.cancel()

    def status(self) -> ServiceStatus:
        """A snapshot for the operator's pages (/healthz, the studio, /metrics' moment gauges).
        Called on the event loop, where the parts it reads are changed."""
        pipeline, writer, figures = self.pipeline, self.writer, self.metrics.figures
        source = self.source.status if self.source is not None else None
        return ServiceStatus(
            state=pipeline.chart.state_id,
            frame=pipeline.compositor.frame,
            on_air=bool(writer.up),
            stopped=self.stopped_by_operator,
            uptime_seconds=time.monotonic() - self.started_at,
            writer_restarts=writer.restarts,
            dropped_frames=writer.dropped,
            underrun_frames=pipeline.compositor.underruns,
            queued_messages=len(pipeline.queued_jobs),
            queued_seconds=pipeline.queued_seconds(),
            rabbitmq_connected=bool(source and source.connected),
            rabbitmq_reconnects=source.reconnects if source is not None else 0,
            output_fps=figures.output_fps,
            last_latency_seconds=figures.last_latency_seconds,
            mean_latency_seconds=figures.mean_latency_seconds,
            messages=dict(figures.outcomes),
            speech=self.speech.report(),
            face=self.hosted.name if self.hosted is not None else self.settings.talking_face_model,
            face_resting_seconds=self.hosted.resting_for() if self.hosted is not None else None,
        )

    def _build_hosted(self) -> HostedFace | None:
        """TALKING_FACE_PROVIDER=api: the vendor's client (the local engine stays its safety net)."""
        settings = self.settings
        if settings.talking_face_provider != "api":
            return None
        from poc.face.hosted.base import create_client

        assert settings.talking_face_api is not None and settings.talking_face_api_key is not None
        publish = None
        if settings.talking_face_audio_public_url is not None:
            from poc.face.hosted.audio_host import AudioHost

            try:
                self.audio_host = AudioHost(
                    settings.talking_face_audio_public_url,
                    settings.talking_face_audio_host,
                    settings.talking_face_audio_port,
                ).start()
            except OSError as error:  # address in use, a host that is not ours
                raise ConfigError(
                    f"TALKING_FACE_AUDIO_HOST/TALKING_FACE_AUDIO_PORT: cannot listen on "
                    f"{settings.talking_face_audio_host}:{settings.talking_face_audio_port}: {error.strerror or error}"
                ) from None
            publish = self.audio_host.publish
        try:
            client = create_client(
                settings.talking_face_api,
                settings.talking_face_api_url,
                settings.talking_face_api_key.get_secret_value(),
                settings.talking_face_avatar_id,
                avatar_image=settings.talking_avatar_path,
                audio_url_for=publish,
                language=settings.tts_language,
            )
        except ValueError as error:  # a setting the vendor cannot work with (one line, names it)
            raise ConfigError(str(error)) from None
        return HostedFace(
            client,
            timeout_s=settings.talking_face_api_timeout_seconds,
            width=settings.width,
            height=settings.height,
            fps=settings.fps,
            metrics=self.metrics,
        )

    async def _bring_to_life(self) -> None:
        """Blinks and breath (IDLE_BLINKS, IDLE_MOTION): the avatar's landmarks are found off
        the event loop while the stream is already on air; life starts at the next frame."""
        settings, compositor = self.settings, self.pipeline.compositor
        options = LifeOptions(blinks=settings.idle_blinks, motion=settings.idle_motion, seed=settings.idle_seed)
        if options.off:
            return

        def build() -> tuple[Life, Life]:
            life = Life.for_avatar(self.avatar, settings.fps, options)
            if self.talking_avatar is self.avatar:
                return life, life
            return life, Life.for_avatar(self.talking_avatar, settings.fps, options)

        try:
            life, talking_life = await anyio.to_thread.run_sync(build)
        except Exception as error:  # an extra, never a reason to take the stream off air
            log.warning("the avatar will not blink or breathe: %s", error)
            return
        # both at once, between two ticks (the clock runs on this event loop)
        compositor.life = life.start_at(compositor.frame)
        compositor.talking_life = talking_life.start_at(compositor.frame)
        log.info("the avatar lives from frame %d: blinks %s, motion x%g, seed %d", life.origin,
                 "on" if life.blinks else "off", options.motion if life.signals else 0, options.seed)  # fmt: skip

    def build_engine(self) -> None:
        """Build the face engine now, unless it is built: a station replaced on SIGHUP has its
        new engine built (the avatar's face found, MuseTalk's avatar prepared) while the old
        station is still on air. Raises EngineError naming its setting."""
        if self.engine is None:
            try:
                self.engine = self._build_engine()
            except EngineError as error:
                raise error.with_setting("TALKING_FACE_MODEL") from None

    def prepare(self) -> None:
        """What a station replaced on SIGHUP makes ready while the old one is still on air: the
        face engine (build_engine) and the voice (a local voice's model loaded: a voice file cut
        short passes every check until then). Raises a StartupError naming its setting."""
        self.build_engine()
        self._load_voice()

    async def _engine_ready(self) -> None:
        # Shielded: the build runs on in its thread whatever happens here, and an engine built
        # for a stream that is going away must still reach self.engine for _release to close
        # (its model lease and batcher seat would otherwise stay taken for good).
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.build_engine)

    def _build_engine(self) -> FaceEngine:
        """Build the engine and, where it can, measure it (MuseTalk: frames per second on a short
        warm-up, which also sets how far ahead of playout it needs audio)."""
        engine = create_engine(self.settings, self.talking_avatar)
        engine.warm_up()
        return engine

    async def _stop_gracefully(self) -> None:
        """No new messages; the one on air finishes if it ends within the deadline (else it is
        cut with a blend); every unplayed message goes back to the queue; then the broker
        connection closes (acks and requeues sent). The caller then stops the clock and ffmpeg."""
        deadline = self.settings.shutdown_deadline_seconds
        log.info("stopping: no new messages; waiting up to %.1f s for the message on air", deadline)
        if self.source is not None:
            with anyio.move_on_after(1):
                await self.source.stop_consuming()
        await self.pipeline.shutdown(deadline)
        if self.source is not None:
            with anyio.move_on_after(1.5):
                await self.source.aclose()

    async def stop_stream(self) -> int | None:
        """Off air on purpose (the `stop` control; see poc.source.base.StreamSwitch). The
        speech on air is cut with a blend and every held message handed back unplayed; once
        the blend has gone out, ffmpeg gets EOF and finishes the FLV (a clean unpublish, not
        an outage). Returns how many messages were handed back; None if already stopped."""
        if self.stopped_by_operator:
            return None
        self.stopped_by_operator = True
        self.metrics.stream_on_air.set(0)
        handed_back = await self.pipeline.hand_back("the stream was stopped by an operator")
        # The pipeline has settled the jobs; the source requeues them in its own tasks.
        await anyio.to_thread.run_sync(self.writer.stop_output, abandon_on_cancel=True)
        return handed_back

    def stay_stopped(self) -> None:
        """Begin off air, as the operator's `stop` left the station this Service replaces (a
        rebuild after a failure, a changed station on SIGHUP): no ffmpeg and no speech taken
        until a `start` on the control queue. Before run() only."""
        self.stopped_by_operator = True
        self.metrics.stream_on_air.set(0)

    async def start_stream(self) -> float | None:
        """Back on air (the `start` control): a new ffmpeg starts at once and the clock's next
        frame goes to it. Returns the seconds until ffmpeg ran; None if not stopped."""
        if not self.stopped_by_operator:
            return None
        started = time.monotonic()
        await anyio.to_thread.run_sync(self.writer.start_output, abandon_on_cancel=True)
        self.stopped_by_operator = False
        self.metrics.stream_on_air.set(1)
        return time.monotonic() - started

    async def _warm_up_speech(self, ready: anyio.Event) -> None:
        await anyio.to_thread.run_sync(self._load_voice)
        ready.set()

    def _load_voice(self) -> None:
        """Load a local voice's model now (vendors need nothing; a voice loaded already is not
        loaded again). One that cannot load now never will, and every message would fail: a
        start-up error (task groups carry it out)."""
        try:
            self.speech.warm_up()
        except Exception as error:
            setting = "TTS_VOICE" if self.settings.tts_voice else "TTS_PROVIDER"
            raise ConfigError(f"{setting}: the voice cannot load: {error}") from None


async def run_service(settings: Settings) -> int:
    """One stream, as configured by the environment: run until SIGINT/SIGTERM; the exit code."""
    from poc.host import run_single

    return await run_single(settings)
