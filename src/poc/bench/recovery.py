"""`python -m poc bench recovery`: how soon the stream is readable again after the RTMP
server crashes (SIGKILL) and comes back.

Starts the project's nginx and `python -m poc run`, then N times: kill nginx, wait
`--down` seconds, start it again, and time until a reader decodes a video frame from the
server. The goal is 3 s; the writer's back-off is capped at 2 s and a new ffmpeg starts with a
keyframe.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from poc.bench.harness import RtmpServer, ServiceProcess, free_port


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("recovery", help="seconds until the stream is back after an RTMP server crash")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--down", type=float, default=3.0, help="seconds the server stays down")
    parser.set_defaults(func=run)


def _readable(url: str) -> bool:
    result = subprocess.run(
        ["ffmpeg", "-v", "quiet", "-rw_timeout", "2000000", "-analyzeduration", "200000", "-i", url,
         "-map", "0:v", "-frames:v", "1", "-f", "null", "-"],
        capture_output=True, timeout=30,
    )  # fmt: skip
    return result.returncode == 0


def run(args: argparse.Namespace) -> int:
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
                while not _readable(url):
                    if time.monotonic() - back > 60:
                        raise RuntimeError("the stream did not come back within 60 s")
                    time.sleep(0.05)
                backs.append(time.monotonic() - back)
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
