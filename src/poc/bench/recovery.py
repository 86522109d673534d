"""`python -m poc bench recovery`: how soon the stream is back after a crash.

`--fault rtmp` (the default): starts the project's nginx and `python -m poc run`, then N times:
kill nginx, wait `--down` seconds, start it again, and time until a reader decodes a video frame
from the server. The goal is 3 s; the writer's back-off is capped at 2 s and a new ffmpeg starts
with a keyframe.

`--fault service`: N times, while a message is on air, SIGKILL the service and everything it
started (as a dead host would; ffmpeg runs in a session of its own, so the process group alone
would leave it behind) and start `python -m poc run` again at once, as systemd's
`Restart=always` or a kubelet would. RabbitMQ sees the connection drop and puts the unacked
message back; the new process must put it on air again and play it exactly once. Each run
times, from the kill: a reader decoding a frame of the new stream, "connected to RabbitMQ" in
the new log, and the message on air again; and, from the new process's start, "on air:
streaming". A JSON report with every run and the medians goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import aio_pika
import anyio

from poc.bench.harness import RtmpServer, ServiceProcess, descendants, free_port
from poc.source.connection import AmqpSettings, control_queue_name, dead_letter_queue_name
from poc.source.publish import build_text, publish

# Long enough (about 10 s of speech) to be cut off half-way, short enough to replay quickly.
SPOKEN = (
    "This sentence is on air when the service is killed. It goes on for a while, so that the "
    "kill cuts it off half-way, and it must be heard again, once, after the restart."
)
ON_AIR_BEFORE_KILL_S = 1.0  # the kill lands mid-sentence, not on its first frame
WAIT_S = 120.0  # for any one step: piper and the first frame are slow on a loaded 2-core machine
POLL_S = 0.02
READER_WAIT_S = 60.0  # longer than any restart, so the reader started at the kill is still waiting
FIGURES = ("kill_to_readable_s", "kill_to_connected_s", "kill_to_replay_on_air_s", "start_to_streaming_s")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("recovery", help="seconds until the stream is back after a crash")
    parser.add_argument("--fault", choices=("rtmp", "service"), default="rtmp",
                        help="rtmp: kill the RTMP server (default); service: kill and restart the service")  # fmt: skip
    parser.add_argument("--runs", type=_at_least_one, default=3)
    parser.add_argument("--down", type=float, default=3.0, help="seconds the server stays down (rtmp only)")
    parser.add_argument("--keep-logs", type=Path, metavar="DIR",
                        help="copy the service processes' logs here (service only)")  # fmt: skip
    parser.set_defaults(func=run)


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    if args.fault == "service":
        return _run_service_fault(args.runs, args.keep_logs)
    return _run_rtmp_fault(args)


def _readable(url: str, wait_s: float = 2.0) -> bool:
    """Whether a reader decodes a video frame, waiting up to `wait_s` for data.

    Its 200 ms probe sees video only if a keyframe comes within it: sure for a reader that is
    waiting when a publisher starts (every ffmpeg starts with a keyframe), a matter of luck for
    one that joins a running stream between keyframes (2 s apart; most such tries fail).
    """
    result = subprocess.run(
        ["ffmpeg", "-v", "quiet", "-rw_timeout", str(int(wait_s * 1e6)), "-analyzeduration", "200000", "-i", url,
         "-map", "0:v", "-frames:v", "1", "-f", "null", "-"],
        capture_output=True, timeout=wait_s + 30,
    )  # fmt: skip
    return result.returncode == 0


def _wait_readable(url: str, timeout: float, wait_s: float = 2.0) -> float:
    """Poll until a reader decodes a video frame; returns when it did (time.monotonic)."""
    deadline = time.monotonic() + timeout
    while not _readable(url, wait_s):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the stream was not readable within {timeout:g} s")
        time.sleep(0.05)
    return time.monotonic()


def _run_rtmp_fault(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="poc-bench-") as tmp:
        server = RtmpServer(Path(tmp) / "nginx")
        server.start()
        url = f"{server.base_url}/k{uuid.uuid4().hex[:12]}"
        env = {"RTMP_URL": url, "HTTP_PORT": str(free_port()), "RABBITMQ_QUEUE": f"poc_bench_{uuid.uuid4().hex[:8]}"}
        service = ServiceProcess(env, Path(tmp) / "service.log").start()
        backs: list[float] = []
        try:
            service.wait_for_log(r"on air: streaming", timeout=60)
            for _ in range(args.runs):
                time.sleep(3)
                server.kill()
                time.sleep(args.down)
                server.start()
                back = time.monotonic()
                backs.append(_wait_readable(url, timeout=60) - back)
            alive = service.process is not None and service.process.poll() is None
        finally:
            service.stop()
            server.stop()
    print(f"RTMP server killed {args.runs} times, down {args.down:g} s each; the service "
          f"{'kept running' if alive else 'EXITED'}")  # fmt: skip
    print()
    print("| figure | value | goal |")
    print("|---|---|---|")
    print(f"| stream readable again after the server is back, median | {statistics.median(backs):.2f} s | <= 3 s |")
    print(f"| runs | {', '.join(f'{b:.2f}' for b in backs)} s | |")
    return 0 if alive else 1


# -- --fault service ------------------------------------------------------------------------------


class _FirstSeen:
    """When each pattern first appears in a growing log file, polled every POLL_S in a thread,
    so the log-based figures keep their resolution while the main thread waits on readers."""

    def __init__(self, path: Path, patterns: dict[str, str]) -> None:
        self._path = path
        self._patterns = {name: re.compile(pattern) for name, pattern in patterns.items()}
        self._seen: dict[str, float] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="log-watch", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._done.is_set() and len(self._seen) < len(self._patterns):
            now = time.monotonic()
            text = self._path.read_text(errors="replace") if self._path.exists() else ""
            for name, pattern in self._patterns.items():
                if name not in self._seen and pattern.search(text):
                    self._seen[name] = now
            self._done.wait(POLL_S)

    def when(self, name: str, timeout: float) -> float:
        """When `name`'s pattern was first seen (time.monotonic); waits up to `timeout`."""
        deadline = time.monotonic() + timeout
        while name not in self._seen:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {self._patterns[name].pattern!r} in {self._path.name} within {timeout:g} s")
            time.sleep(POLL_S)
        return self._seen[name]

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)


def _gone(pid: int) -> bool:
    """Exited (reaped, or a zombie: init in a container may be slow to reap orphans)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _kill_like_a_dead_host(service: ServiceProcess) -> float:
    """SIGKILL the service's process group and every process it started; returns when the
    SIGKILL went out (time.monotonic), after everything is gone.

    The group is stopped first so that no new ffmpeg can start between reading the tree and
    killing it; ffmpeg has a session of its own and is killed by pid.
    """
    assert service.process is not None
    os.killpg(service.pid, signal.SIGSTOP)
    tree = descendants(service.pid)
    killed = time.monotonic()
    os.killpg(service.pid, signal.SIGKILL)
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    service.process.wait(timeout=10)
    service.stop()  # already reaped: only closes its log
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in tree):
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {tree} survived SIGKILL for 10 s")
        time.sleep(POLL_S)
    return killed


def _one_run(number: int, service: ServiceProcess, url: str, amqp: AmqpSettings, log_dir: Path,
             bench_id: str) -> tuple[dict[str, object], ServiceProcess]:  # fmt: skip
    """Publish, kill mid-sentence, restart, measure; returns the figures and the new process."""
    message_id = f"recovery-{bench_id}-{number}"
    anyio.run(publish, amqp, {**build_text(SPOKEN), "id": message_id}, backend="asyncio")
    service.wait_for_log(rf"{message_id}: on air", timeout=WAIT_S)
    time.sleep(ON_AIR_BEFORE_KILL_S)
    killed = _kill_like_a_dead_host(service)
    before = service.log_text()
    fresh = ServiceProcess(service.env, log_dir / f"service-{number}.log").start()
    seen = _FirstSeen(fresh.log_path, {
        "connected": r"connected to RabbitMQ",
        "replay_on_air": rf"{message_id}: on air",
        "streaming": r"on air: streaming",
        "played": rf"{message_id}: played",
    })  # fmt: skip
    try:
        # One reader waits from the kill on, as a viewer's player would, so it is subscribed
        # when the new publisher starts and gets its first keyframe.
        readable = _wait_readable(url, timeout=WAIT_S, wait_s=READER_WAIT_S)
        figures = {
            "kill_to_restart_s": fresh.started_at - killed,
            "kill_to_readable_s": readable - killed,
            "kill_to_connected_s": seen.when("connected", WAIT_S) - killed,
            "kill_to_replay_on_air_s": seen.when("replay_on_air", WAIT_S) - killed,
            "start_to_streaming_s": seen.when("streaming", WAIT_S) - fresh.started_at,
        }
        seen.when("played", WAIT_S)
    except BaseException:
        fresh.kill()  # the caller only knows the old process
        fresh.stop()
        raise
    finally:
        seen.close()
    after = fresh.log_text()
    return {
        "run": number,
        "message_id": message_id,
        **{name: round(value, 3) for name, value in figures.items()},
        "played_before_kill": before.count(f"{message_id}: played"),
        "replay_on_air_count": after.count(f"{message_id}: on air"),
        "replay_played_count": after.count(f"{message_id}: played"),
    }, fresh


async def _left_and_delete(amqp: AmqpSettings) -> int:
    """Messages still in the bench's queue (0 when every delivery was acked); then delete the
    queue and its derived ones."""
    connection = await aio_pika.connect(**amqp.connect_kwargs())  # type: ignore[arg-type]
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(amqp.queue, durable=True, passive=True)
        left = declared.declaration_result.message_count or 0
        for name in (amqp.queue, control_queue_name(amqp.queue), dead_letter_queue_name(amqp.queue)):
            await channel.queue_delete(name)
    return left


def _floats(results: list[dict[str, object]], name: str) -> list[float]:
    return [float(result[name]) for result in results]  # type: ignore[arg-type]


def _run_service_fault(runs: int, keep_logs: Path | None) -> int:
    bench_id = uuid.uuid4().hex[:8]
    amqp = AmqpSettings(queue=f"poc_bench_{bench_id}")
    load_before = os.getloadavg()[0]
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="poc-bench-") as tmp:
        server = RtmpServer(Path(tmp) / "nginx")
        server.start()
        url = f"{server.base_url}/k{uuid.uuid4().hex[:12]}"
        env = {"RTMP_URL": url, "HTTP_PORT": str(free_port()), "RABBITMQ_QUEUE": amqp.queue, "LOG_LEVEL": "info"}
        service = ServiceProcess(env, Path(tmp) / "service-0.log").start()
        try:
            service.wait_for_log(r"on air: streaming", timeout=WAIT_S)
            service.wait_for_log(r"connected to RabbitMQ", timeout=WAIT_S)
            for number in range(1, runs + 1):
                result, service = _one_run(number, service, url, amqp, Path(tmp), bench_id)
                results.append(result)
            service.stop()  # SIGTERM: anything still held unacked would go back to the queue
        finally:
            service.kill()  # only if something above failed
            service.stop()
            server.stop()
            if keep_logs is not None:
                keep_logs.mkdir(parents=True, exist_ok=True)
                for log in Path(tmp).glob("service-*.log"):
                    shutil.copy(log, keep_logs / f"{amqp.queue}-{log.name}")
            left = anyio.run(_left_and_delete, amqp, backend="asyncio")
    once = all(r["played_before_kill"] == 0 and r["replay_on_air_count"] == 1 and r["replay_played_count"] == 1
               for r in results)  # fmt: skip
    report = {
        "fault": "service",
        "queue": amqp.queue,
        "runs": results,
        "median": {name: round(statistics.median(_floats(results, name)), 3) for name in FIGURES},
        "replayed_exactly_once": once,
        "left_in_queue": left,
        "machine": {"cpus": os.cpu_count(), "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]},
    }
    print(json.dumps(report, indent=2))
    return 0 if once and left == 0 else 1
