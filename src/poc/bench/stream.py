"""`python -m poc bench stream`: the cost and steadiness of the idle stream.

Runs the real stream (service code in this process, real ffmpeg, the project's nginx) for N
seconds and reports CPU seconds per stream second (this process + ffmpeg), tick lateness p50 /
p99 / max, dropped frames, and, from a separate `python -m poc run`, how soon after start a
viewer can read the first frame.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import anyio
import numpy as np

from poc.bench.harness import RtmpServer, ServiceProcess, free_port, process_tree_cpu_seconds
from poc.config import load_settings


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("stream", help="CPU, tick lateness and start-up of the idle stream")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--resolution", default="1280x720")
    parser.add_argument("--fps", default="30")
    parser.add_argument("--startup-runs", type=int, default=3)
    parser.set_defaults(func=run)


def time_to_first_frame(server: RtmpServer, env: dict[str, str], log_dir: Path, key: str) -> float:
    """Seconds from spawning `python -m poc run` until a reader decodes a video frame."""
    service = ServiceProcess({**env, "RTMP_URL": f"{server.base_url}/{key}"}, log_dir / f"{key}.log").start()
    try:
        deadline = service.started_at + 60
        while time.monotonic() < deadline:
            result = subprocess.run(
                ["ffmpeg", "-v", "quiet", "-rw_timeout", "2000000", "-analyzeduration", "200000",
                 "-i", f"{server.base_url}/{key}", "-map", "0:v", "-frames:v", "1", "-f", "null", "-"],
                capture_output=True, timeout=30,
            )  # fmt: skip
            if result.returncode == 0:
                return time.monotonic() - service.started_at
            time.sleep(0.05)
        raise RuntimeError("the stream never became readable")
    finally:
        service.stop()


async def measure_idle(settings, seconds: float) -> dict[str, float]:
    from poc.app import Service

    service = await anyio.to_thread.run_sync(Service, settings)
    service.writer.start()
    lateness: list[float] = []
    warm_up = 2 * settings.fps  # let ffmpeg connect and settle before measuring
    start: dict[str, float] = {}

    def observe(tick) -> None:
        if tick.frame == warm_up:
            start.update(cpu=process_tree_cpu_seconds(os.getpid()), wall=time.monotonic(),
                         dropped=service.writer.dropped)  # fmt: skip
        if tick.frame >= warm_up:
            lateness.append(tick.lateness)

    try:
        async with anyio.create_task_group() as tg:
            await tg.start(service.pipeline.run)
            await service.run_clock(frames=warm_up + int(seconds * settings.fps), on_tick=observe)
            cpu = process_tree_cpu_seconds(os.getpid()) - start["cpu"]
            wall = time.monotonic() - start["wall"]
            tg.cancel_scope.cancel()
    finally:
        await anyio.to_thread.run_sync(service.writer.close)
    late_ms = np.array(lateness) * 1000
    return {
        "stream_seconds": len(lateness) / settings.fps,
        "wall_seconds": wall,
        "cpu_per_stream_second": cpu / (len(lateness) / settings.fps),
        "lateness_p50_ms": float(np.percentile(late_ms, 50)),
        "lateness_p99_ms": float(np.percentile(late_ms, 99)),
        "lateness_max_ms": float(late_ms.max()),
        "dropped_frames": service.writer.dropped - start["dropped"],
        "writer_restarts": service.writer.restarts,
    }


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="poc-bench-") as tmp:
        server = RtmpServer(Path(tmp) / "nginx")
        server.start()
        try:
            env = {"RTMP_RESOLUTION": args.resolution, "RTMP_FPS": str(args.fps), "HTTP_PORT": "0",
                   "RABBITMQ_QUEUE": f"poc_bench_{free_port()}"}  # fmt: skip
            starts = [time_to_first_frame(server, env, Path(tmp), f"start{i}") for i in range(args.startup_runs)]
            settings = load_settings(
                overrides={**env, "RTMP_URL": f"{server.base_url}/bench", "LOG_LEVEL": "warning"}
            )
            figures = anyio.run(measure_idle, settings, args.seconds, backend="asyncio")
        finally:
            server.stop()
    print(f"Idle stream, {args.resolution}@{args.fps}, {figures['stream_seconds']:.0f} s measured "
          f"(after 2 s warm-up), {os.cpu_count()} CPU cores")  # fmt: skip
    print()
    print("| figure | value | goal |")
    print("|---|---|---|")
    print(f"| CPU seconds per stream second (service + ffmpeg) | {figures['cpu_per_stream_second']:.3f} | <= 0.6 |")
    print(f"| tick lateness p50 | {figures['lateness_p50_ms']:.2f} ms | |")
    print(f"| tick lateness p99 | {figures['lateness_p99_ms']:.2f} ms | <= 5 ms |")
    print(f"| tick lateness max | {figures['lateness_max_ms']:.2f} ms | |")
    print(f"| dropped frames | {figures['dropped_frames']} | 0 |")
    print(f"| ffmpeg restarts | {figures['writer_restarts']} | 0 |")
    print(f"| wall seconds for the stream seconds | {figures['wall_seconds']:.2f} | = stream seconds |")
    print(f"| first frame readable after start (median of {len(starts)}) | "
          f"{statistics.median(starts):.2f} s (runs: {', '.join(f'{s:.2f}' for s in starts)}) | <= 3 s |")  # fmt: skip
    return 0
