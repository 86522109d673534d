"""RabbitMQ adapter: deliveries in, jobs out, each delivery settled when its job is.

Why it is shaped this way:

- A speech delivery is acked only after its job settles (played, interrupted, dropped), so if
  the service dies first RabbitMQ redelivers it: at-least-once. The prefetch count is therefore
  also how many speech messages the pipeline can hold at once.
- Control messages have their own queue, consumed on their own channel: a control message
  must never wait behind speech (a queue is FIFO and the prefetch window is full of held,
  unacked speech), nor on the speech channel's state (being restored after an error, or on
  brokers that count prefetch per channel; RabbitMQ counts it per consumer).
- Speech with ``"interrupt": true`` is taken on the control queue too, so it cuts in at once
  instead of waiting behind the main queue's backlog. It is held and settled like main-queue
  speech (its ack goes to the control channel); at most MAX_HELD_INTERRUPTS of it are held,
  so the controls keep room in that channel's prefetch window.
- aio-pika calls consumer callbacks from tasks of its own; they only pass each delivery into a
  memory stream, and the work happens in tasks this adapter's task group owns, one lane per
  queue, in delivery order (so jobs reach the sink in publish order).
- ``clear`` purges the queue *before* dropping the held jobs: dropping first would ack them,
  free the prefetch window and let RabbitMQ hand over the next queued messages before the
  purge reached it.
- ``stop`` (the stream off air on purpose) cancels the speech consumer *before* the held jobs
  are handed back: requeued with no consumer on the queue, they stay there, in order, with
  whatever was published meanwhile, until ``start`` consumes again. The control queue is
  consumed throughout, or ``start`` could never arrive.
- A broker blip kills the channel, so acks for deliveries held across it fail (logged) and
  RabbitMQ redelivers them. A redelivery whose id matches a job still held, or one settled
  moments ago, is settled along with that job instead of being spoken twice.
- A message refused here (it breaks the contract, or is speech without interrupt on the
  control queue) never becomes a job, so the pipeline, which counts the outcomes of jobs,
  never sees it: the adapter counts it as dead-lettered itself, once per message (not again
  for a redelivery).

asyncio only: aio-pika does not run on trio.
"""

from __future__ import annotations

import collections
import contextvars
import hashlib
import logging
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn

import aio_pika
import anyio
import attrs
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from poc.jobs import Job, Outcome
from poc.messages import (
    ControlMessage,
    InvalidMessage,
    Message,
    MessageLimits,
    TextMessage,
    message_id,
    parse_message,
    printable_id,
    refused_body_id,
)
from poc.source.base import JobSink, SourceStatus, StreamSwitch
from poc.source.connection import (
    CHATTY_LOGGERS,
    AmqpSettings,
    RepeatFilter,
    control_queue_name,
    dead_letter_queue_name,
    describe_connect_error,
)

if TYPE_CHECKING:
    from poc.metrics import Metrics

LOG = logging.getLogger(__name__)

CONTROL_PREFETCH = 16
# Interrupting speech taken from the control queue and not yet settled, at most: the rest of
# the control channel's prefetch window stays free for control messages.
MAX_HELD_INTERRUPTS = CONTROL_PREFETCH // 2
SHUTDOWN_FLUSH_S = 2.0  # how long cancellation may spend acking jobs that already settled
PARSE_IN_THREAD_BYTES = 64 * 1024
RECENT_SETTLED = 256  # settled ids remembered to recognise redeliveries after a blip
RECENT_REFUSED = 256  # refused messages remembered, to count a redelivered one only once
# How long one delivery's settling (DLQ publish, ack, nack) may run on after a cancellation.
SETTLE_DEADLINE_S = 2.0
CLOSE_DEADLINE_S = 2.0  # closing the connection, which a half-open broker never answers
MAX_SHORTSTR_BYTES = 255  # AMQP's limit on a message_id (a shortstr), in UTF-8 bytes
MAX_ERROR_CHARS = 500  # the x-error header of a DLQ copy
# What pamqp raises when a property cannot be encoded (a message_id over 255 bytes, a lone
# surrogate): before anything is sent, so the channel is fine, and again on every redelivery.
_UNENCODABLE = (TypeError, ValueError, struct.error)

_Delivery = tuple[int, AbstractIncomingMessage]  # (hand-over sequence number, message)


def _wire_id(job_id: str | None) -> str | None:
    """`job_id` in a form an AMQP message_id can carry: valid UTF-8, at most 255 bytes.

    Body ids are bounded in characters (a 128-character CJK id is 384 bytes), so a long one is
    cut at a character boundary; the DLQ copy's body still holds the whole id.
    """
    if not job_id:
        return None
    encoded = job_id.encode("utf-8", "backslashreplace")[:MAX_SHORTSTR_BYTES]
    return encoded.decode("utf-8", "ignore")


def _header_text(text: str) -> str:
    """One line of valid UTF-8 for an x-error header (a reason may quote producer text)."""
    text = " ".join(text.split())[:MAX_ERROR_CHARS]
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _amqp_id(delivery: AbstractIncomingMessage) -> str | None:
    """The delivery's own message_id, escaped for logs (a producer may put anything there)."""
    return printable_id(delivery.message_id) if delivery.message_id else None


@attrs.frozen
class _Refusal:
    """Why parse_message refused a body, and the id the body names if it is a usable one."""

    reason: str
    body_id: str | None


def _read(body: bytes, limits: MessageLimits) -> Message | _Refusal:
    """The message in `body`, or why it was refused (run off the event loop for big bodies)."""
    try:
        return parse_message(body, limits)
    except InvalidMessage as exc:
        return _Refusal(str(exc), refused_body_id(body, limits))


def _refusal_key(delivery: AbstractIncomingMessage) -> tuple[str | None, int, bytes]:
    """What tells a redelivery of a refused message from another message: the same AMQP
    message_id and the same body. Only the body's head is hashed, so a huge body costs the
    event loop no more than a small one; its length stands in for the rest."""
    head = hashlib.blake2b(delivery.body[:PARSE_IN_THREAD_BYTES], digest_size=16).digest()
    return delivery.message_id, len(delivery.body), head


class _Settles:
    """Runs each delivery's settling to its end even if the service is cancelled meanwhile.

    Why: a shutdown landing between the DLQ publish and the ack left the message in both
    queues; one landing inside an ack left a played message to be redelivered and spoken again
    after the restart; one landing after a clear's purge left the clear to be redelivered and
    purge what was published since. Shielded, a settle that has begun completes.

    No deadline while the service runs (a purge of a long queue may take seconds, and cutting
    it would leave the clear unacked on a live channel). From the stop on (`close`), every settle
    gets SETTLE_DEADLINE_S from then, so a broker that stopped answering cannot hold the
    shutdown up for long. Nested settles (a dead-letter's ack) run in the outer one's scope: a
    shield of their own would keep the outer deadline from reaching them.
    """

    def __init__(self) -> None:
        self._open: set[anyio.CancelScope] = set()
        self._closing = False
        self._inside: contextvars.ContextVar[bool] = contextvars.ContextVar("settling", default=False)

    @contextmanager
    def one(self, job_id: str | None) -> Iterator[None]:
        if self._inside.get():
            yield
            return
        with anyio.CancelScope(shield=True) as scope:
            if self._closing:
                scope.deadline = anyio.current_time() + SETTLE_DEADLINE_S
            self._open.add(scope)
            token = self._inside.set(True)
            try:
                yield
            finally:
                self._inside.reset(token)
                self._open.discard(scope)
        if scope.cancelled_caught:
            LOG.warning(
                "settling message id=%s took over %.0f s while stopping; RabbitMQ will redeliver it",
                job_id,
                SETTLE_DEADLINE_S,
            )

    def close(self) -> None:
        """The service is stopping: settles under way and to come get SETTLE_DEADLINE_S."""
        self._closing = True
        deadline = anyio.current_time() + SETTLE_DEADLINE_S
        for scope in self._open:
            scope.deadline = min(scope.deadline, deadline)


@attrs.define(eq=False)
class _Held:
    """A submitted job and the deliveries (one, or more after a redelivery) it settles."""

    job: Job
    deliveries: list[AbstractIncomingMessage]
    origin: str
    finished: bool = False


class AmqpSource:
    """Consumes the speech queue and its control queue and drives a JobSink."""

    def __init__(
        self,
        settings: AmqpSettings,
        sink: JobSink,
        limits: MessageLimits,
        *,
        queue: str | None = None,
        prefetch: int = 4,
        reconnect_interval: float = 1.0,
        stream: StreamSwitch | None = None,
        metrics: Metrics | None = None,
        stopped: bool = False,
    ) -> None:
        """`stream` is what `stop` and `start` act on; without one they only pause and resume
        consuming speech. `metrics` counts the messages refused here, before any job exists
        (the pipeline counts the outcomes of the jobs it settles). `stopped`: begin as a `stop`
        leaves it (only the control queue consumed, until a `start`)."""
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        self._settings = settings
        self._sink = sink
        self._stream = stream
        self._metrics = metrics
        self._speech_paused = stopped  # stopped by an operator: the speech queue is not consumed
        self._resume_lock = anyio.Lock()
        self._limits = limits
        self._queue = queue or settings.queue
        self._control_queue = control_queue_name(self._queue)
        self._dlq = dead_letter_queue_name(self._queue)
        self._prefetch = prefetch
        self._reconnect_interval = reconnect_interval
        self._connection: AbstractRobustConnection | None = None
        self._main_channel: AbstractChannel | None = None
        self._main: AbstractQueue | None = None
        self._consumers: list[tuple[AbstractQueue, str]] = []
        self._sends: dict[str, MemoryObjectSendStream[_Delivery]] = {}
        self._tg: TaskGroup | None = None
        self._held: dict[Job, _Held] = {}
        self._recent: collections.OrderedDict[str, tuple[Outcome, str]] = (
            collections.OrderedDict()
        )
        self._refused: collections.OrderedDict[tuple[str | None, int, bytes], None] = (
            collections.OrderedDict()
        )
        self._handed_over = 0  # deliveries passed to the main lane so far
        self._dropped_through = 0  # main-lane deliveries up to this number were cleared
        self._log_filter = RepeatFilter()
        self._closing = False
        self._settles = _Settles()
        self._consuming_ended = False  # stop_consuming() was called: shutting down
        self._connected = False
        self._reconnects = 0
        self._last_error = ""

    @property
    def status(self) -> SourceStatus:
        return SourceStatus(
            connected=self._connected, reconnects=self._reconnects, last_error=self._last_error
        )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> NoReturn:
        """Connect (retrying forever), consume both queues, and settle deliveries; never returns.

        `task_status.started()` is called once both queues are being consumed, so a caller
        that must not wait for the broker should use start_soon rather than start.
        Handled here: broker down or refusing us at start-up (one log line per distinct error,
        retried every reconnect_interval), outages later (aio-pika reconnects; acks that fail
        are logged), bad messages (dead-lettered). Cancellation: stops consuming, acks jobs that
        already settled (up to SHUTDOWN_FLUSH_S), leaves the rest unacked for redelivery.
        """
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).addFilter(self._log_filter)
        send_main, receive_main = anyio.create_memory_object_stream[_Delivery](self._prefetch)
        send_control, receive_control = anyio.create_memory_object_stream[_Delivery](
            CONTROL_PREFETCH
        )
        self._sends = {self._queue: send_main, self._control_queue: send_control}
        try:
            async with anyio.create_task_group() as tg, send_main, send_control:
                self._tg = tg
                try:
                    tg.start_soon(self._lane, receive_main, self._queue)
                    tg.start_soon(self._lane, receive_control, self._control_queue)
                    await self._connect()
                    task_status.started()
                    await anyio.sleep_forever()
                finally:
                    # Cancelled: the task group now waits for its tasks, settles in flight
                    # included, which are shielded; from here they get a deadline.
                    self._settles.close()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_FLUSH_S):
                await self.aclose()
            for name in CHATTY_LOGGERS:
                logging.getLogger(name).removeFilter(self._log_filter)
        raise AssertionError("unreachable")  # sleep_forever only ends by cancellation

    async def aclose(self) -> None:
        """Stop consuming, ack/dead-letter/requeue jobs that already settled, close the
        connection. Unsettled jobs stay unacked, so RabbitMQ redelivers them. Idempotent; a
        second call closes the connection if a first one was cut short before it could."""
        if self._closing:
            await self._close_connection()
            return
        self._closing = True
        self._settles.close()
        try:
            await self.stop_consuming()
            for held in list(self._held.values()):
                if held.job.is_settled:
                    await self._finish(held)
            unsettled = sum(1 for held in self._held.values() if not held.job.is_settled)
            if unsettled:
                LOG.info("closing with %d unsettled message(s) for RabbitMQ to redeliver", unsettled)
        finally:
            # Even when the caller's budget ran out above: a connection left open keeps its
            # unacked deliveries from the station that replaces this one until the process
            # ends, and aio-pika would restore a consumer whose cancel was cut off.
            await self._close_connection()

    async def _close_connection(self) -> None:
        connection, self._connection = self._connection, None
        self._connected = False
        if connection is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_DEADLINE_S):
            await connection.close()

    async def stop_consuming(self) -> None:
        """Ask the broker for no more deliveries (graceful shutdown: what is held still settles,
        and a message handed back with requeue stays in the queue instead of coming straight
        back to us). For good: a `start` control handled later does not consume again."""
        self._consuming_ended = True
        consumers, self._consumers = self._consumers, []
        for queue, tag in consumers:
            try:
                await queue.cancel(tag)
            except Exception as exc:  # the channel may already be gone; closing covers it
                LOG.debug("cancelling consumer on %s failed: %s", queue.name, exc)

    # -- connection -------------------------------------------------------------------------

    async def _connect(self) -> None:
        """Connect and start consuming, retrying until it works; one log line per new error."""
        last = ""
        while True:
            try:
                # Stored at once so that aclose() closes it if we are cancelled half-way.
                self._connection = connection = await aio_pika.connect_robust(
                    **self._settings.connect_kwargs(),  # type: ignore[arg-type]
                    reconnect_interval=self._reconnect_interval,
                    client_properties={"connection_name": f"poc source {self._queue}"},
                )
                await self._start_consuming(connection)
            except Exception as exc:  # any failure here is "not yet": log it once and retry
                await self._close_connection()
                error = describe_connect_error(exc, self._settings)
                if error != last:
                    LOG.warning(
                        "RabbitMQ at %s not available: %s; retrying every %g s",
                        self._settings.url_for_logs(),
                        error,
                        self._reconnect_interval,
                    )
                    last = error
                self._last_error = error
                await anyio.sleep(self._reconnect_interval)
                continue
            self._connected = True
            self._log_filter.mute = False
            connection.close_callbacks.add(self._on_connection_lost)
            connection.reconnect_callbacks.add(self._on_reconnected)
            LOG.info(
                "connected to RabbitMQ at %s; consuming %r (prefetch %d) and %r%s",
                self._settings.url_for_logs(),
                self._queue,
                self._prefetch,
                self._control_queue,
                "; stopped by an operator: speech waits for a start" if self._speech_paused else "",
            )
            return

    async def _start_consuming(self, connection: AbstractRobustConnection) -> None:
        # Robust channels remember qos, declarations and consumers and replay them on reconnect.
        main_channel = await connection.channel()
        await main_channel.set_qos(prefetch_count=self._prefetch)
        main = await main_channel.declare_queue(self._queue, durable=True)
        await main_channel.declare_queue(self._control_queue, durable=True)
        await main_channel.declare_queue(self._dlq, durable=True)
        control_channel = await connection.channel()
        await control_channel.set_qos(prefetch_count=CONTROL_PREFETCH)
        control = await control_channel.declare_queue(self._control_queue, durable=True)
        self._main_channel, self._main = main_channel, main
        self._consumers = [(control, await control.consume(self._on_control_delivery))]
        if not self._speech_paused:  # stopped: consumed from the `start` on (_consume_speech)
            self._consumers.insert(0, (main, await main.consume(self._on_main_delivery)))

    def _on_connection_lost(self, _connection: object, exc: BaseException | None = None) -> None:
        # aio-pika calls this for the drop and again for every failed reconnect attempt; log
        # the drop, then only a change of reason.
        if self._closing:
            return
        error = describe_connect_error(exc, self._settings) if exc else "connection closed"
        if self._connected or error != self._last_error:
            LOG.warning(
                "lost RabbitMQ connection (%s); reconnecting every %g s; held messages will be "
                "redelivered",
                error,
                self._reconnect_interval,
            )
        self._connected = False
        self._last_error = error

    def _on_reconnected(self, _connection: object) -> None:
        self._connected = True
        self._reconnects += 1
        self._log_filter.reset()
        LOG.info("reconnected to RabbitMQ at %s", self._settings.url_for_logs())

    # -- deliveries ---------------------------------------------------------------------------

    async def _on_main_delivery(self, message: AbstractIncomingMessage) -> None:
        self._handed_over += 1
        await self._hand_over(self._queue, (self._handed_over, message))

    async def _on_control_delivery(self, message: AbstractIncomingMessage) -> None:
        await self._hand_over(self._control_queue, (0, message))

    async def _hand_over(self, queue: str, delivery: _Delivery) -> None:
        try:
            await self._sends[queue].send(delivery)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # shutting down: left unacked, RabbitMQ redelivers it

    async def _lane(self, receive: MemoryObjectReceiveStream[_Delivery], origin: str) -> None:
        """Handle one queue's deliveries in order; never waits for a job to play."""
        async with receive:
            async for seq, delivery in receive:
                if self._closing:
                    continue  # left unacked for redelivery
                await self._handle(delivery, origin, seq)

    async def _handle(self, delivery: AbstractIncomingMessage, origin: str, seq: int) -> None:
        if len(delivery.body) > PARSE_IN_THREAD_BYTES:
            # Big bodies (audio) take milliseconds to validate, a hostile JSON body up to a few
            # hundred: off the event loop, where the media clock runs.
            msg = await anyio.to_thread.run_sync(_read, delivery.body, self._limits)
        else:
            msg = _read(delivery.body, self._limits)
        if isinstance(msg, _Refusal):
            # The producer's own id when the body names a usable one: aio-pika gives every
            # message a random AMQP message_id, which the producer never sees.
            await self._refuse(delivery, msg.reason, origin, msg.body_id or _amqp_id(delivery))
            return
        if isinstance(msg, ControlMessage):
            await self._control(msg, delivery, origin)
            return
        job_id = message_id(msg, delivery.message_id)
        on_control = origin == self._control_queue
        if on_control and not msg.interrupt:
            error = (
                f"{msg.type} message on the control queue; publish speech to {self._queue!r} "
                '(only speech with "interrupt": true is taken on the control queue)'
            )
            await self._refuse(delivery, error, origin, job_id)
            return
        # Control-lane deliveries all carry seq 0 and are handled in order with the clears on
        # that lane: one held before a clear is dropped by the clear itself (sink.clear), one
        # delivered after it is newer than the clear, so the main lane's check does not apply.
        if not on_control and seq <= self._dropped_through:
            LOG.info("dropped message id=%s: delivered before a clear", job_id)
            await self._ack(delivery, job_id)
            return
        if delivery.redelivered and await self._settle_redelivery(delivery, job_id, origin):
            return
        if on_control and self._speech_paused:
            # Requeued, it would come straight back (the control queue is consumed while
            # stopped): a hot loop. Dead-lettered, the producer sees why.
            await self._refuse(delivery, "the stream is stopped: send start first", origin, job_id)
            return
        if on_control and self._held_interrupts() >= MAX_HELD_INTERRUPTS:
            # Each one held takes a slot of the control channel's prefetch window until it
            # settles; a flood of them must leave room for the controls (clear, stop).
            error = (
                f"{MAX_HELD_INTERRUPTS} interrupting messages are already waiting to play; "
                "send clear first"
            )
            await self._refuse(delivery, error, origin, job_id)
            return
        if self._speech_paused:
            # Handed over before the consumer was cancelled: back to the queue, unplayed. No
            # await between this check and submit(), so a stop always sees what was submitted.
            await self._requeue(delivery, job_id, "the stream is stopped")
            return

        job = Job(message=msg, id=job_id)
        held = _Held(job=job, deliveries=[delivery], origin=origin)
        self._held[job] = held
        if isinstance(msg, TextMessage):
            size = f"{len(msg.data)} chars"
        else:
            size = f"{msg.format}, {len(msg.audio_bytes())} bytes"
        LOG.info(
            "accepted %s message id=%s (%s)%s",
            msg.type,
            job_id,
            size,
            ", interrupting" if msg.interrupt else "",
        )
        try:
            self._sink.submit(job, urgent=msg.interrupt)
        except Exception as exc:  # a sink bug must not stop the stream; the message is kept
            LOG.exception("pipeline refused message id=%s", job_id)
            if job.settle(Outcome.DEAD_LETTERED, f"pipeline refused the job: {exc}"):
                self._count_dead_lettered()  # settled here, not by the pipeline that counts
        assert self._tg is not None
        self._tg.start_soon(self._settle_when_done, held)

    def _held_interrupts(self) -> int:
        """Speech taken from the control queue that has not settled yet."""
        return sum(
            1
            for held in self._held.values()
            if held.origin == self._control_queue and not held.job.is_settled
        )

    async def _refuse(
        self, delivery: AbstractIncomingMessage, error: str, origin: str, job_id: str | None
    ) -> None:
        """Dead-letter a message refused before any job exists, and count it: the pipeline,
        which counts the outcomes of the jobs it settles, never sees it. A redelivery of one
        refused before (its ack was lost with a channel) is copied to the DLQ again, but is
        the same message and is not counted again."""
        if not await self._dead_letter(delivery, error, origin, job_id):
            return  # back in the queue: counted when it reaches the DLQ
        # Refused at the door: no job, so the pipeline never logs it; this line is its record.
        LOG.warning("dead-lettered message id=%s to %s: %s", job_id, self._dlq, error)
        key = _refusal_key(delivery)
        seen = delivery.redelivered and key in self._refused
        self._refused[key] = None
        self._refused.move_to_end(key)
        while len(self._refused) > RECENT_REFUSED:
            self._refused.popitem(last=False)
        if not seen:
            self._count_dead_lettered()

    def _count_dead_lettered(self) -> None:
        if self._metrics is not None:
            self._metrics.message_settled(Outcome.DEAD_LETTERED.value)

    async def _settle_redelivery(
        self, delivery: AbstractIncomingMessage, job_id: str, origin: str
    ) -> bool:
        """Attach a redelivery to the job it repeats, or settle it as that job was; True if so."""
        for held in self._held.values():
            if held.job.id == job_id and not held.finished:
                held.deliveries.append(delivery)
                LOG.info("redelivered message id=%s is already held; not submitting again", job_id)
                return True
        previous = self._recent.get(job_id)
        if previous is None:
            return False
        outcome, reason = previous
        LOG.info("redelivered message id=%s was already %s; not replaying", job_id, outcome.value)
        await self._apply(delivery, outcome, reason, origin, job_id)
        return True

    async def _settle_when_done(self, held: _Held) -> None:
        await held.job.settled.wait()
        await self._finish(held)

    async def _finish(self, held: _Held) -> None:
        job = held.job
        assert job.outcome is not None
        # A redelivery may be appended while we await below; the loop picks it up.
        while held.deliveries:
            delivery = held.deliveries.pop(0)
            # When a redelivery follows, this one came on a channel that has since died.
            stale = bool(held.deliveries)
            await self._apply(delivery, job.outcome, job.reason, held.origin, job.id, stale)
        held.finished = True
        self._held.pop(job, None)
        if job.outcome is not Outcome.REQUEUED:
            self._recent[job.id] = (job.outcome, job.reason)
            while len(self._recent) > RECENT_SETTLED:
                self._recent.popitem(last=False)

    async def _apply(
        self,
        delivery: AbstractIncomingMessage,
        outcome: Outcome,
        reason: str,
        origin: str,
        job_id: str,
        stale: bool = False,
    ) -> None:
        with self._settles.one(job_id):
            if stale:
                # Most likely on a channel that has died (the redelivery after it carries the
                # outcome, incl. any DLQ copy); try anyway in case it is alive, and fail quietly.
                try:
                    if outcome is Outcome.REQUEUED:
                        await delivery.nack(requeue=True)
                    else:
                        await delivery.ack()
                except Exception as exc:
                    LOG.debug("earlier delivery of message id=%s not settled: %s", job_id, exc)
                return
            if outcome is Outcome.DEAD_LETTERED:
                reason = reason or "dead-lettered by the pipeline"
                if await self._dead_letter(delivery, reason, origin, job_id):
                    # The pipeline logged the outcome and its reason (job_queue.settled).
                    LOG.debug("message id=%s copied to %s", job_id, self._dlq)
            elif outcome is Outcome.REQUEUED:
                try:
                    await delivery.nack(requeue=True)
                except Exception as exc:
                    LOG.warning(
                        "could not requeue message id=%s (%s); RabbitMQ will redeliver it",
                        job_id,
                        type(exc).__name__,
                    )
                else:
                    LOG.info("requeued message id=%s", job_id)
            else:
                LOG.debug("message id=%s %s; acking", job_id, outcome.value)
                await self._ack(delivery, job_id)

    async def _ack(self, delivery: AbstractIncomingMessage, job_id: str | None) -> None:
        with self._settles.one(job_id):
            try:
                await delivery.ack()
            except Exception as exc:
                # The channel died since delivery: that is the at-least-once case.
                LOG.warning(
                    "could not ack message id=%s (%s); RabbitMQ will redeliver it",
                    job_id,
                    type(exc).__name__,
                )

    async def _dead_letter(
        self, delivery: AbstractIncomingMessage, error: str, origin: str, job_id: str | None
    ) -> bool:
        """Copy the original body to the DLQ with the reason, then ack the delivery; False if
        the copy could not be published.

        Only a failure that may pass (the channel is gone) returns the message to the queue:
        one that would fail again on the redelivery would loop for ever.
        """
        with self._settles.one(job_id):
            error = _header_text(error)
            headers: dict[str, str] = {"x-error": error, "x-original-queue": origin}
            try:
                await self._publish_dead(delivery, headers, job_id)
            except Exception as exc:
                LOG.warning(
                    "could not dead-letter message id=%s (%s); returning it to the queue",
                    job_id,
                    type(exc).__name__,
                )
                try:
                    await delivery.nack(requeue=True)
                except Exception:
                    pass  # channel gone: RabbitMQ requeues it anyway
                return False
            await self._ack(delivery, job_id)
            return True
        return False  # cut short while stopping: left for RabbitMQ to redeliver

    async def _publish_dead(
        self, delivery: AbstractIncomingMessage, headers: dict[str, str], job_id: str | None
    ) -> None:
        """Publish the DLQ copy; one whose properties cannot be encoded goes without them."""
        if self._main_channel is None:
            raise RuntimeError("no channel yet")
        exchange = self._main_channel.default_exchange
        dead = aio_pika.Message(
            body=delivery.body,
            headers=headers,  # type: ignore[arg-type]
            content_type=delivery.content_type,
            message_id=_wire_id(job_id),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            await exchange.publish(dead, routing_key=self._dlq)
        except _UNENCODABLE as exc:
            # The body and our own headers always encode: the copy still reaches the DLQ, with
            # the reason, and the message leaves the queue instead of looping.
            LOG.warning(
                "DLQ copy of message id=%s has properties AMQP cannot carry (%s); "
                "sending it without them",
                job_id,
                _header_text(str(exc)),
            )
            bare = aio_pika.Message(
                body=delivery.body,
                headers=headers,  # type: ignore[arg-type]
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            await exchange.publish(bare, routing_key=self._dlq)

    async def _control(
        self, msg: ControlMessage, delivery: AbstractIncomingMessage, origin: str
    ) -> None:
        if msg.action == "interrupt":
            self._sink.interrupt()
            LOG.info("control: interrupt")
        elif msg.action == "stop":
            await self._stop_stream()
        elif msg.action == "start":
            await self._start_stream()
        else:
            # Purge, drop and ack as one: a clear cut off after its purge would stay unacked, be
            # redelivered after the restart and purge what was published since.
            with self._settles.one(_amqp_id(delivery)):
                await self._clear(origin)
                await self._ack(delivery, _amqp_id(delivery))
            return
        await self._ack(delivery, _amqp_id(delivery))

    async def _clear(self, origin: str) -> None:
        purged = await self._purge()
        if origin == self._control_queue:
            # Deliveries handed to the main lane before the purge answered were published
            # before the clear too. (A clear on the main queue is itself in that lane, so
            # everything before it has already been submitted and is cleared below.)
            self._dropped_through = self._handed_over
        dropped = self._sink.clear()
        LOG.info(
            "control: clear dropped %d held job(s) and purged %s queued message(s)",
            dropped,
            "?" if purged is None else purged,
        )

    async def _stop_stream(self) -> None:
        """Off air on purpose: no more speech deliveries, every held job handed back (requeued),
        the output closed cleanly. A second stop is a no-op (logged at debug only)."""
        if self._speech_paused:
            LOG.debug("control: stop, but the stream is already stopped")
            return
        self._speech_paused = True
        main = [entry for entry in self._consumers if entry[0] is self._main]
        self._consumers = [entry for entry in self._consumers if entry[0] is not self._main]
        for queue, tag in main:
            try:
                await queue.cancel(tag)
            except Exception as exc:  # channel being restored: cancel() already forgot the consumer
                LOG.debug("cancelling consumer on %s failed: %s", queue.name, exc)
        handed_back: int | None = 0
        if self._stream is not None:
            try:
                handed_back = await self._stream.stop_stream()
            except Exception:  # a fault here must not end the control lane (start must still work)
                LOG.exception("control: stop failed half-way")
        LOG.info(
            "control: stop: off air by operator; %d held message(s) returned to %r, which is not "
            "consumed until a start",
            handed_back or 0,
            self._queue,
        )

    async def _start_stream(self) -> None:
        """Back on air and consuming speech again; a start while on air is a no-op."""
        if not self._speech_paused:
            LOG.debug("control: start, but the stream is on air already")
            return
        took: float | None = None
        if self._stream is not None:
            try:
                took = await self._stream.start_stream()
            except Exception:
                LOG.exception("control: start failed half-way")
        self._speech_paused = False
        resumed = await self._consume_speech()
        LOG.info(
            "control: start: back on air%s; consuming %r %s",
            f" (output running after {took:.2f} s)" if took is not None else "",
            self._queue,
            "again" if resumed else "as soon as the channel is back",
        )
        if not resumed:
            assert self._tg is not None
            self._tg.start_soon(self._keep_trying_to_consume)

    async def _consume_speech(self) -> bool:
        """Consume the speech queue again (after a start); False if the channel refused."""
        async with self._resume_lock:  # a retry and a new start must not both consume
            if self._consuming_ended or any(queue is self._main for queue, _ in self._consumers):
                return True
            if self._main is None:
                return False
            try:
                tag = await self._main.consume(self._on_main_delivery)
            except Exception as exc:
                LOG.warning("could not consume %r again: %s", self._queue, exc)
                return False
            self._consumers.insert(0, (self._main, tag))
            return True

    async def _keep_trying_to_consume(self) -> None:
        while not self._speech_paused and not self._consuming_ended:
            await anyio.sleep(self._reconnect_interval)
            if not self._speech_paused and await self._consume_speech():
                LOG.info("consuming %r again", self._queue)
                return

    async def _requeue(self, delivery: AbstractIncomingMessage, job_id: str, why: str) -> None:
        with self._settles.one(job_id):
            try:
                await delivery.nack(requeue=True)
            except Exception as exc:  # channel gone: RabbitMQ requeues it anyway
                LOG.debug("could not requeue message id=%s: %s", job_id, exc)
            else:
                LOG.info("requeued message id=%s: %s", job_id, why)

    async def _purge(self) -> int | None:
        """Remove every message waiting in the main queue; how many, or None if it failed."""
        if self._main is None:
            return None
        try:
            result = await self._main.purge()
        except Exception as exc:  # channel being restored: the held jobs are still cleared
            LOG.warning("could not purge %s: %s", self._queue, exc)
            return None
        return int(getattr(result, "message_count", 0) or 0)
