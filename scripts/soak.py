"""Soak test: run the real service for N minutes under a mixed message load and report.

    .venv/bin/python scripts/soak.py --minutes 30 [--report FILE] [--memory-log FILE]

Starts the project's nginx and `python -m poc run` (defaults: 1280x720@30, piper, warp), records
the stream back from the RTMP server the whole time, and offers one message per second: short
texts, audio clips, urgent texts, interrupts and malformed bodies. At the end it reports stream
time covered vs wall time, video gaps, dropped and held frames, the A/V offset at the start and the
end of the recording, RSS after warm-up and at the end (single samples, the means of the first and
the last minute, and the least-squares slope), and the outcome of every message offered.
`--memory-log FILE` also loads scripts/memprobe into the service, which splits its memory every
10 s (anonymous/file pages, glibc in-use/free-held, Python blocks) and, from the warm-up on,
snapshots /proc/self/smaps per mapping once a minute: compare the first and the last with
`scripts/memprobe/smaps_diff.py FILE`.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import wave
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from poc.bench.harness import RtmpServer, ServiceProcess, free_port  # noqa: E402
from poc.source.connection import AmqpSettings  # noqa: E402
from poc.source.publish import PublishError, publish  # noqa: E402

import aio_pika  # noqa: E402
import asyncio  # noqa: E402

WORDS = ["red", "blue", "green", "today", "offer", "quality", "fresh", "new", "small", "bright"]


MEMPROBE = Path(__file__).resolve().parent / "memprobe"  # sitecustomize.py loaded by --memory-log


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def slope_mib_per_minute(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of (seconds, KiB) RSS samples in MiB/min: unlike two end points it
    is not swayed by where one sample happens to fall in the allocator's saw-tooth."""
    if len(samples) < 2:
        return float("nan")
    seconds, kib = np.array(samples, dtype=float).T
    return float(np.polyfit(seconds, kib, 1)[0]) * 60 / 1024


def window_means_kib(samples: list[tuple[float, int]], start: float, end: float,
                     window: float = 60) -> tuple[float, float]:
    """Mean RSS over the first and the last `window` seconds of (seconds, KiB) samples taken
    between `start` and `end`: a process whose memory swings by tens of MiB within a sentence
    (tensors given back as soon as they are freed) makes any single sample a coin toss."""
    first = [kib for t, kib in samples if t <= start + window]
    last = [kib for t, kib in samples if t >= end - window]
    return float(np.mean(first)), float(np.mean(last))


def tone_wav(seconds: float, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    samples = (np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return buffer.getvalue()


class Publisher:
    """Publishes the way `poc send` does (poc.source.publish: a connection per message and the
    broker's confirm before it counts as sent), retried while the broker is unreachable. The
    2-hour soak of 2026-11-30 published through one robust aio-pika connection instead, and 13
    messages offered while another test run closed every broker connection were never accounted
    for (the service was far behind, so most likely they never reached the queue): a sender
    must not count a message as sent before the broker has confirmed it. A second connection
    serves the counts at the end."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.amqp = AmqpSettings(queue=queue)

    async def open(self) -> None:
        self.connection = await aio_pika.connect_robust("amqp://guest:guest@127.0.0.1/")
        self.channel = await self.connection.channel()

    async def send(self, body: bytes, control: bool = False) -> None:
        for attempt in range(60):
            try:
                await publish(self.amqp, body, control=control)
                return
            except PublishError:
                if attempt == 59:  # at-least-once: a retried publish may land twice; ids dedupe
                    raise
                await asyncio.sleep(0.5)

    async def count(self, queue: str) -> int:
        declared = await self.channel.declare_queue(queue, durable=True, passive=True)
        return declared.declaration_result.message_count or 0

    async def dead_letter_ids(self) -> list[str]:
        declared = await self.channel.declare_queue(self.queue + ".dlq", durable=True)
        ids = []
        while (message := await declared.get(no_ack=True, fail=False)) is not None:
            found = re.search(rb"soak-\d+", message.body)  # bad bodies may not even be JSON
            ids.append(found.group().decode() if found else "<no id>")
        return ids

    async def close(self) -> None:
        await self.connection.close()


async def offer(publisher: Publisher, number: int, rng: random.Random) -> tuple[str, str]:
    """Publish one message; returns (id, kind)."""
    message_id = f"soak-{number}"
    roll = rng.random()
    if roll < 0.45:
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5))).capitalize() + "."
        await publisher.send(json.dumps({"type": "text", "data": text, "id": message_id}).encode())
        return message_id, "text"
    if roll < 0.60:
        data = base64.b64encode(tone_wav(rng.uniform(0.4, 1.2))).decode()
        await publisher.send(json.dumps({"type": "audio", "format": "wav", "data": data, "id": message_id}).encode())
        return message_id, "audio"
    if roll < 0.70:
        body = {"type": "text", "data": "Breaking news, right now.", "id": message_id, "interrupt": True}
        await publisher.send(json.dumps(body).encode())
        return message_id, "urgent"
    if roll < 0.80:
        await publisher.send(json.dumps({"type": "control", "action": "interrupt", "id": message_id}).encode(), control=True)
        return message_id, "control"
    bad = rng.choice([b'{"type": "text", "id": "%s"' % message_id.encode(),
                      json.dumps({"type": "text", "data": "", "id": message_id}).encode(),
                      json.dumps({"type": "sing", "data": "la", "id": message_id}).encode()])  # fmt: skip
    await publisher.send(bad)
    return message_id, "bad"


def samples_until(recording: Path, t: float) -> int:
    """Decoded audio samples from the start of the recording up to stream time t."""
    decoder = subprocess.Popen(["ffmpeg", "-v", "error", "-i", str(recording), "-map", "0:a:0", "-to", f"{t:.3f}",
                                "-ac", "1", "-f", "s16le", "-"], stdout=subprocess.PIPE)  # fmt: skip
    samples = 0
    assert decoder.stdout is not None
    while block := decoder.stdout.read(1 << 20):
        samples += len(block) // 2
    decoder.wait()
    return samples


def analyse(recording: Path, fps: int) -> dict:
    packets = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "packet=stream_index,pts_time", "-of", "csv=p=0",
         str(recording)], capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    streams = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(recording)],
        capture_output=True, text=True, check=True).stdout)["streams"]  # fmt: skip
    video_index = next(s["index"] for s in streams if s["codec_type"] == "video")
    audio_stream = next(s for s in streams if s["codec_type"] == "audio")
    rate = int(audio_stream["sample_rate"])
    video, audio = [], []
    for row in packets:
        index, _, pts = row.partition(",")
        if pts and pts != "N/A":
            (video if int(index) == video_index else audio).append(float(pts))
    video.sort()
    gaps = [b - a for a, b in zip(video, video[1:]) if b - a > 1.5 / fps]
    audio.sort()
    aac = 1024 / rate  # seconds per AAC packet
    audio_gaps = [b - a for a, b in zip(audio, audio[1:]) if b - a > 1.5 * aac]
    # Timestamps against counts: where each track's last packet sits relative to where its
    # packet count says it should. A lost packet or a re-stamped track shows here.
    audio_slip = audio[-1] - (audio[0] + (len(audio) - 1) * aac)
    video_slip = video[-1] - (video[0] + (len(video) - 1) / fps)
    video_span = video[-1] - video[0] + 1 / fps
    samples = samples_until(recording, audio[-1] + aac)
    return {
        "video_frames": len(video),
        "video_seconds": video_span,
        "audio_seconds": samples / rate,
        "gaps": len(gaps),
        "audio_gaps": len(audio_gaps),
        "audio_slip": audio_slip,
        "video_slip": video_slip,
        "largest_gap": max(gaps, default=0.0),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--report", type=Path)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--memory-log", type=Path,
                        help="load scripts/memprobe into the service: a JSON line every 10 s with "
                             "RSS as anonymous/file pages, glibc in-use/free-held, Python blocks, and a "
                             "per-mapping smaps snapshot once a minute after warm-up (smaps_diff.py)")  # fmt: skip
    args = parser.parse_args()
    rng = random.Random(args.seed)
    fps = 30
    with tempfile.TemporaryDirectory(prefix="poc-soak-") as tmp_name:
        tmp = Path(tmp_name)
        server = RtmpServer(tmp / "nginx")
        server.start()
        queue = f"poc_soak_{uuid.uuid4().hex[:8]}"
        url = f"{server.base_url}/soak{uuid.uuid4().hex[:8]}"
        env = {"RTMP_URL": url, "RABBITMQ_QUEUE": queue, "HTTP_PORT": str(free_port())}
        if args.memory_log:
            args.memory_log.unlink(missing_ok=True)
            env["POC_MEMPROBE_LOG"] = str(args.memory_log.resolve())
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(MEMPROBE), os.environ.get("PYTHONPATH")]))
        service = ServiceProcess(env, tmp / "service.log").start()
        try:
            service.wait_for_log(r"connected to RabbitMQ", timeout=120)
            recording = tmp / "soak.mkv"
            seconds = args.minutes * 60
            reader = subprocess.Popen(
                ["ffmpeg", "-v", "error", "-y", "-rw_timeout", "10000000", "-analyzeduration", "3000000",
                 "-probesize", "5000000", "-i", url, "-t", str(seconds), "-c", "copy", "-f", "matroska",
                 str(recording)], stderr=subprocess.PIPE)  # fmt: skip
            wall_start = time.monotonic()
            time.sleep(3)
            offered: dict[str, str] = {}
            rss_start = 0
            warm_up = min(120, seconds / 4)
            rss_samples: list[tuple[float, int]] = []  # (seconds since start, KiB) after warm-up

            async def drive() -> tuple[int, list[str]]:
                publisher = Publisher(queue)
                await publisher.open()
                number = 0
                nonlocal rss_start
                while time.monotonic() - wall_start < seconds - 20:
                    elapsed = time.monotonic() - wall_start
                    if not rss_start and elapsed > warm_up:
                        rss_start = rss_kib(service.pid)  # after warm-up: voice, arenas, caches
                    if rss_start and (not rss_samples or elapsed - rss_samples[-1][0] >= 10):
                        rss_samples.append((elapsed, rss_kib(service.pid)))
                    message_id, kind = await offer(publisher, number, rng)
                    offered[message_id] = kind
                    number += 1
                    await asyncio.sleep(max(0.0, wall_start + 3 + number - time.monotonic()))
                while time.monotonic() - wall_start < seconds + 5 and reader.poll() is None:
                    await asyncio.sleep(0.5)
                left, dead = await publisher.count(queue), await publisher.dead_letter_ids()
                await publisher.close()
                return left, dead

            left_in_queue, dead = asyncio.run(drive())
            try:
                reader.wait(timeout=60)
                reader_stopped = False
            except subprocess.TimeoutExpired:  # the stream fell behind the wall clock: report it
                reader.send_signal(signal.SIGINT)  # ffmpeg closes the file it has so far
                reader.wait(timeout=30)
                reader_stopped = True
            wall = time.monotonic() - wall_start
            rss_end = rss_kib(service.pid)
            rss_samples.append((wall, rss_end))
            _, health_body = service.get("/healthz")
            health = json.loads(health_body)
        finally:
            code = service.stop(timeout=10)
            server.stop()

        async def leftovers() -> list[str]:
            publisher = Publisher(queue)
            await publisher.open()
            declared = await publisher.channel.declare_queue(queue, durable=True)
            ids = []
            while (message := await declared.get(no_ack=True, fail=False)) is not None:
                found = re.search(rb"soak-\d+", message.body)
                ids.append(found.group().decode() if found else "<no id>")
            for name in (queue, queue + ".control", queue + ".dlq"):
                await publisher.channel.queue_delete(name)
            await publisher.close()
            return ids

        still_queued = asyncio.run(leftovers())
        log = service.log_text()
        outcomes: dict[str, str] = {}
        for message_id, outcome in re.findall(r"message (soak-\d+): (played|interrupted|dropped|dead_lettered|requeued)", log):
            outcomes[message_id] = outcome
        for message_id in dead:
            outcomes.setdefault(message_id, "dead_lettered")
        for message_id in still_queued:  # never delivered, or handed back at shutdown
            outcomes[message_id] = "still in the queue"
        stream = analyse(recording, fps)
    speech_ids = [m for m, kind in offered.items() if kind != "control"]
    unaccounted = [m for m in speech_ids if m not in outcomes]
    tally = Counter(outcomes.get(m, "unaccounted") for m in speech_ids)
    kinds = Counter(offered.values())
    first_mean, last_mean = window_means_kib(rss_samples, rss_samples[0][0], rss_samples[-1][0])
    lines = [
        f"Soak: {args.minutes:g} min, one message per second ({dict(kinds)}), 1280x720@30, piper + warp,",
        f"2-core CPU, no GPU. Service exit code after SIGTERM: {code}."
        + (" The recorder had not got all the stream time 60 s after the end and was stopped."
           if reader_stopped else ""),
        "",
        "| figure | value | goal |",
        "|---|---|---|",
        f"| stream time recorded / wall time | {stream['video_seconds']:.1f} s / {wall:.1f} s | equal |",
        f"| video frames / expected | {stream['video_frames']} / {round(stream['video_seconds'] * fps)} | equal |",
        f"| video gaps > 1.5 frames | {stream['gaps']} (largest {stream['largest_gap'] * 1000:.0f} ms) | 0 |",
        f"| audio / video seconds recorded (the reader joins video at a keyframe) | {stream['audio_seconds']:.2f} / {stream['video_seconds']:.2f} | equal |",
        f"| audio packet gaps > 1.5 packets | {stream['audio_gaps']} | 0 |",
        f"| audio timestamps vs sample count, end of run | {stream['audio_slip'] * 1000:+.1f} ms | 0 |",
        f"| video timestamps vs frame count, end of run | {stream['video_slip'] * 1000:+.1f} ms | 0 |",
        f"| A/V offset drift, start to end (audio slip - video slip) | "
        f"{(stream['audio_slip'] - stream['video_slip']) * 1000:+.1f} ms | < 33 ms (one frame) |",
        f"| dropped frames (writer) | {health.get('dropped_frames')} | 0 |",
        f"| held (underrun) frames | {health.get('underrun_frames')} | |",
        f"| ffmpeg restarts | {health.get('writer_restarts')} | 0 |",
        f"| service RSS after warm-up / end | {rss_start / 1024:.0f} MiB / {rss_end / 1024:.0f} MiB "
        f"({(rss_end - rss_start) / rss_start * 100:+.1f} %) | < +5 % |",
        f"| service RSS, mean of the first / the last minute after warm-up | {first_mean / 1024:.0f} MiB / "
        f"{last_mean / 1024:.0f} MiB ({(last_mean - first_mean) / first_mean * 100:+.1f} %) | < +5 % |",
        f"| service RSS slope after warm-up (least squares, {len(rss_samples)} samples) | "
        f"{slope_mib_per_minute(rss_samples):+.2f} MiB/min ({slope_mib_per_minute(rss_samples) * 60:+.0f} MiB/hour) | |",
        f"| speech messages offered | {len(speech_ids)} | |",
        f"| outcomes | {dict(tally)} | every one accounted for |",
        f"| left in the queue at the end of the load / after shutdown | {left_in_queue} / {len(still_queued)} | |",
        f"| unaccounted | {len(unaccounted)} {unaccounted[:10]} | 0 |",
    ]
    report = "\n".join(lines)
    print(report)
    if args.report:
        args.report.write_text("# Reliability: soak test\n\n" + report + "\n")
    return 0 if not unaccounted and stream["gaps"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
