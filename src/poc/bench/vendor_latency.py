"""`python -m poc bench latency --tts NAME`: what poc adds to an API voice's latency.

The vendor's own latency is not ours to measure here (its servers cannot be reached), so the
vendor is the local simulator that speaks its protocol, told to wait `--first-byte-ms` before its
first audio byte. What is measured is what poc adds after that byte: from the simulator writing
the first audio byte of a message to the frame carrying that audio entering the encoder (the
tick on which the compositor starts the message; its frame goes to the writer's `offer`, the
queue in front of ffmpeg's stdin, in the same tick). That covers the SDK and HTTP parsing, decoding and
resampling, the speech and face stages, laying audio onto the frame clock, the face render and the
wait for the frame's tick. It runs the real service objects in this process (RabbitMQ is left out:
the clock starts at the vendor's byte, after the message was taken), streaming to a local nginx.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import anyio
from poc.bench.harness import RtmpServer
from poc.bench.latency import LINES
from poc.config import load_settings
from poc.jobs import Job
from poc.messages import MessageLimits, parse_message
from poc.simulators.registry import VOICE_SIMULATORS, start_voice_simulator

async def measure(name: str, messages: int, first_byte_s: float, resolution: str, fps: int) -> dict:
    from poc.app import Service

    server, env = start_voice_simulator(name)
    server.first_byte_delay = first_byte_s
    with tempfile.TemporaryDirectory(prefix="poc-bench-") as run_dir:
        rtmp = RtmpServer(Path(run_dir))
        rtmp.start()
        try:
            settings = load_settings(
                environ={},
                env_file=Path(run_dir) / "none.env",
                overrides={**env, "RTMP_URL": f"{rtmp.base_url}/bench", "RTMP_RESOLUTION": resolution,
                           "RTMP_FPS": str(fps), "HTTP_PORT": "0", "TTS_RETRIES": "0"},
            )  # fmt: skip
            service = await anyio.to_thread.run_sync(Service, settings)
            added: list[float] = []
            service.writer.start()
            try:
                engine = await anyio.to_thread.run_sync(service._build_engine)
                service.pipeline.attach_engine(engine)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(service.run_clock)
                    await tg.start(service.pipeline.run)
                    await anyio.sleep(1.0)  # ffmpeg up, the clock settled
                    limits = MessageLimits(max_body_bytes=100_000, max_text_chars=2000, max_audio_seconds=60)
                    for index in range(messages):
                        text = LINES[index % len(LINES)]
                        message = parse_message(json.dumps({"type": "text", "data": text}).encode(), limits)
                        server.first_byte_at.clear()
                        job = Job(message=message, id=f"bench-{index}")
                        service.pipeline.submit(job)
                        with anyio.fail_after(30):
                            await job.settled.wait()
                        # on_air_at: the compositor started the message on this tick, whose frame
                        # (carrying the vendor's first samples) goes to the writer next.
                        if server.first_byte_at and job.on_air_at is not None:
                            added.append(job.on_air_at - server.first_byte_at[0])
                        await anyio.sleep(0.5)
                    tg.cancel_scope.cancel()
            finally:
                await anyio.to_thread.run_sync(service.writer.close)
            underruns = service.metrics.registry.get_sample_value("poc_underrun_frames_total")
        finally:
            rtmp.stop()
            server.stop()
    if not added:
        raise RuntimeError(f"no message was heard from the {name} simulator")
    added_ms = sorted(1000 * a for a in added)
    return {
        "provider": name,
        "messages": len(added_ms),
        "first_byte_delay_ms": round(first_byte_s * 1000),
        "added_p50_ms": round(statistics.median(added_ms), 1),
        "added_p95_ms": round(added_ms[min(len(added_ms) - 1, int(0.95 * len(added_ms)))], 1),
        "added_min_ms": round(added_ms[0], 1),
        "added_max_ms": round(added_ms[-1], 1),
        "underrun_frames": int(underruns),
        "goal_p50_ms": 60,
    }


def run_vendor_latency(args: argparse.Namespace) -> int:
    if args.tts not in VOICE_SIMULATORS:
        print(f"poc bench latency: --tts must be one of {', '.join(VOICE_SIMULATORS)}")
        return 2
    report = anyio.run(
        measure, args.tts, args.messages, args.first_byte_ms / 1000, args.resolution, args.fps,
        backend="asyncio",
    )  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0
