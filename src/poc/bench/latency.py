"""`python -m poc bench latency`: from publishing a text message to hearing it on the stream.

Starts the project's nginx and `python -m poc run` (default 1280x720@30, piper, warp engine),
reads the stream back from the RTMP server with ffmpeg decoding its audio as it arrives, then
publishes N text messages one at a time through RabbitMQ. For each it measures publish → first
non-silent audio read back, and reports p50 / p95, CPU use while talking and underruns.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import anyio
import numpy as np

from poc.bench.harness import RtmpServer, ServiceProcess, free_port, process_tree_cpu_seconds
from poc.source.connection import AmqpSettings
from poc.source.publish import build_text, publish

LINES = [
    "Welcome to the stream.", "Here is today's first product.", "It comes in three colours.",
    "Thanks for watching.", "Let me tell you a little more.", "This one is my favourite.",
    "Questions are welcome.", "Stay tuned for the next item.", "Now, something completely different.",
    "That is all for this part.",
]  # fmt: skip
_RATE = 16000
_BLOCK = 320  # 20 ms


class AudioWatcher:
    """Reads the live stream's audio and notes (wall time) each onset after a silence."""

    def __init__(self, url: str) -> None:
        self.onsets: list[float] = []
        self.loud_until = 0.0
        self._process = subprocess.Popen(
            ["ffmpeg", "-v", "quiet", "-fflags", "nobuffer", "-rw_timeout", "10000000", "-i", url,
             "-vn", "-ac", "1", "-ar", str(_RATE), "-flush_packets", "1", "-f", "s16le", "-"],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        quiet_since = time.monotonic()
        assert self._process.stdout is not None
        while block := self._process.stdout.read(_BLOCK * 2):
            now = time.monotonic()
            level = np.abs(np.frombuffer(block, dtype=np.int16)).max(initial=0)
            if level > 500:
                if now - quiet_since > 0.25 and self.loud_until < quiet_since:
                    self.onsets.append(now)
                self.loud_until = now
            elif now - self.loud_until > 0.25:
                quiet_since = min(quiet_since, now) if self.loud_until < quiet_since else now

    def onset_after(self, since: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [t for t in self.onsets if t > since]
            if later:
                return later[0]
            time.sleep(0.005)
        return None

    def close(self) -> None:
        self._process.kill()
        self._process.wait()


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("latency", help="publish → first audio on the stream, p50/p95")
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--resolution", default="1280x720")
    parser.add_argument("--fps", default="30")
    parser.add_argument(
        "--tts", default=None,
        help="an API voice (elevenlabs, openai, cartesia, azure, google): measure what poc adds "
        "between the vendor's first audio byte and its frame entering the encoder, against the "
        "vendor's local simulator",
    )  # fmt: skip
    parser.add_argument("--first-byte-ms", type=float, default=200.0, help="the simulator's delay (--tts)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.tts:
        from poc.bench.vendor_latency import run_vendor_latency

        args.fps = int(args.fps)
        return run_vendor_latency(args)
    with tempfile.TemporaryDirectory(prefix="poc-bench-") as tmp:
        server = RtmpServer(Path(tmp) / "nginx")
        server.start()
        queue = f"poc_bench_{uuid.uuid4().hex[:8]}"
        env = {
            "RTMP_URL": f"{server.base_url}/latency", "RTMP_RESOLUTION": args.resolution,
            "RTMP_FPS": str(args.fps), "RABBITMQ_QUEUE": queue, "HTTP_PORT": str(free_port()),
        }  # fmt: skip
        service = ServiceProcess(env, Path(tmp) / "service.log").start()
        watcher = None
        try:
            service.wait_for_log(r"connected to RabbitMQ", timeout=120)
            watcher = AudioWatcher(env["RTMP_URL"])
            time.sleep(4)  # the reader joins and the voice loads
            amqp = AmqpSettings(queue=queue)
            latencies, cpu, talk_wall = [], 0.0, 0.0
            for i in range(args.messages):
                message_id = f"bench-{i}"
                body = {**build_text(LINES[i % len(LINES)]), "id": message_id}
                cpu_before = process_tree_cpu_seconds(service.pid)
                published = time.monotonic()
                anyio.run(publish, amqp, body, backend="asyncio")
                onset = watcher.onset_after(published, timeout=15)
                service.wait_for_log(rf"message {message_id}: played", timeout=60)
                talk_wall += time.monotonic() - published
                cpu += process_tree_cpu_seconds(service.pid) - cpu_before
                if onset is None:
                    print(f"message {i}: no audio heard within 15 s")
                else:
                    latencies.append(onset - published)
                time.sleep(0.8)  # let the stream go quiet so the next onset is clear
            status, body_bytes = service.get("/healthz")
            health = json.loads(body_bytes) if status in (200, 503) else {}
        finally:
            if watcher:
                watcher.close()
            service.stop()
            server.stop()
    if not latencies:
        print("no message was heard on the stream")
        return 1
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(f"Latency, {len(latencies)} of {args.messages} text messages heard, {args.resolution}@{args.fps}, "
          f"piper + warp engine, {os.cpu_count()} CPU cores")  # fmt: skip
    print()
    print("| figure | value | goal |")
    print("|---|---|---|")
    print(f"| publish → first audio read back, p50 | {statistics.median(latencies):.2f} s | <= 1.0 s |")
    print(f"| publish → first audio read back, p95 | {p95:.2f} s | <= 1.5 s |")
    print(f"| min / max | {ordered[0]:.2f} / {ordered[-1]:.2f} s | |")
    print(f"| CPU while talking (service + ffmpeg) | {cpu / talk_wall:.2f} cores | < 2 |")
    print(f"| underrun frames | {health.get('underrun_frames', '?')} | 0 |")
    print(f"| dropped frames | {health.get('dropped_frames', '?')} | 0 |")
    return 0
