"""`python -m poc bench stations`: how many stations one process holds on this machine.

For each count N: writes a stations file with N stations (one queue and stream key each, all on
the project's nginx), starts `python -m poc run --stations FILE`, waits until every station is on
air, lets it settle, then measures for `--seconds`: per-station underruns (talking frames late),
dropped frames (frames the encoder could not take) and writer restarts from /metrics, the whole
process tree's CPU (poc plus its ffmpeg encoders) and its RSS. With `--talking F` each station
speaks a short line (piper, the default voice) so that it talks about F of the time, the stations'
lines staggered. Start-up is judged too: every frame dropped or encoder restarted from the first
station's start counts against N, so starting N together must be gap-free.

`--counts 1,2,4,8` measures each; with `--find-max` it then goes on up one station at a time from
the last count while the count is clean (0 underruns, 0 dropped frames and 0 restarts since
start, and every station's clock making at least 99 % of its frames in the measured window). Prints one
JSON object: per count, the figures, and per added station the CPU and memory over N=1.

`--engine musetalk --face-only` measures MuseTalk's faces alone, in this process, with no
service, broker, nginx or encoders (for a lent GPU machine): poc.bench.musetalk_stations.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Callable

from poc.bench.harness import (
    RtmpServer,
    ServiceProcess,
    free_port,
    process_tree_cpu_seconds,
    process_tree_rss_mib,
)

# Spoken lines, about 3-4 s each with piper's default voice.
LINES = (
    "Welcome back to the shop, today everything in blue is on offer.",
    "This small lamp is bright, quiet, and it folds away in seconds.",
    "Ask me anything about delivery, returns, or the size of a box.",
    "Our fresh green tea arrived this morning, and it smells wonderful.",
)
LINE_SECONDS = 3.5  # what one line lasts on air, for pacing the talking share
MIN_FRAMES_RATIO = 0.99  # frames made / wall time x fps, for the slowest station, to count as clean


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("stations", help="how many stations one process streams without a gap")
    parser.add_argument("--counts", default="1,2,4,8", help="station counts to measure, comma-separated")
    parser.add_argument("--find-max", action="store_true", help="after --counts, one more station at a time while clean")
    parser.add_argument("--engine", default="warp", choices=["warp", "musetalk"])
    parser.add_argument("--resolution", default="1280x720")
    parser.add_argument("--fps", default="30")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--talking", type=float, default=0.0, help="share of the time each station talks (0-1)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds on air before measuring")
    from poc.bench import musetalk_stations  # imported here: it imports this module's LINE_SECONDS

    musetalk_stations.add_arguments(parser)
    parser.set_defaults(func=run)


def stations_file(path: Path, count: int, rtmp_base: str, tag: str) -> list[str]:
    """Write N stations; returns their queues (station i is `s{i}`)."""
    queues, lines = [], []
    for i in range(count):
        queue = f"poc_bench_{tag}_s{i}"
        queues.append(queue)
        lines += ["[[station]]", f'name = "s{i}"', f'queue = "{queue}"', f'rtmp_url = "{rtmp_base}/s{i}{tag}"',
                  f"idle_seed = {i}", ""]  # fmt: skip
    path.write_text("\n".join(lines))
    return queues


def station_samples(service: ServiceProcess) -> dict[str, dict[str, float]]:
    """Per station: frames, underruns, dropped frames, writer restarts and played messages."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(service.http + "/metrics", timeout=10) as response:
        text = response.read().decode()
    wanted = {
        "poc_frames_total": "frames",
        "poc_underrun_frames_total": "underruns",
        "poc_dropped_frames_total": "dropped",
        "poc_writer_restarts_total": "restarts",
    }
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            station = sample.labels.get("station")
            if station is None:
                continue
            into = found.setdefault(station, dict.fromkeys([*wanted.values(), "played"], 0.0))
            if sample.name in wanted:
                into[wanted[sample.name]] = sample.value
            elif sample.name == "poc_messages_total" and sample.labels.get("outcome") == "played":
                into["played"] = sample.value
    return found


def publish_lines(queues: list[str], talking: float, seconds: float, stop_at: float) -> int:
    """Give each station a line every LINE_SECONDS / talking seconds, staggered; returns how many."""
    import anyio

    from poc.source.connection import AmqpSettings
    from poc.source.publish import build_text, publish

    amqp = AmqpSettings()  # the local broker, guest/guest
    period = LINE_SECONDS / talking
    sent = 0
    start = time.monotonic()
    while time.monotonic() < stop_at - LINE_SECONDS:
        for i, queue in enumerate(queues):
            due = start + (i / len(queues)) * period + (sent // len(queues)) * period
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            if time.monotonic() >= stop_at - LINE_SECONDS:
                return sent
            body = build_text(LINES[(sent + i) % len(LINES)])
            anyio.run(publish, amqp, body, queue, backend="asyncio")
            sent += 1
    return sent


def measure(count: int, args: argparse.Namespace, server: RtmpServer, run_dir: Path) -> dict:
    tag = uuid.uuid4().hex[:6]
    path = run_dir / f"stations-{count}.toml"
    queues = stations_file(path, count, server.base_url, tag)
    env = {
        "STATIONS_FILE": str(path),
        "RTMP_RESOLUTION": args.resolution,
        "RTMP_FPS": str(args.fps),
        "TALKING_FACE_MODEL": args.engine,
        "HTTP_PORT": str(free_port()),
        "LOG_LEVEL": "info",
    }
    service = ServiceProcess(env, run_dir / f"stations-{count}.log").start()
    try:
        service.wait_for_log(rf"{count} stations on air", timeout=60 + 20 * count)
        on_air_after = time.monotonic() - service.started_at
        time.sleep(args.settle)
        before = station_samples(service)
        cpu0, t0 = process_tree_cpu_seconds(service.pid), time.monotonic()
        stop_at = t0 + args.seconds
        sent = publish_lines(queues, args.talking, args.seconds, stop_at) if args.talking > 0 else 0
        time.sleep(max(0.0, stop_at - time.monotonic()))
        cpu, wall = process_tree_cpu_seconds(service.pid) - cpu0, time.monotonic() - t0
        rss = process_tree_rss_mib(service.pid)
        after = station_samples(service)
    finally:
        service.stop(timeout=15)
        _delete_queues(queues)
    window = {name: {k: after[name][k] - before.get(name, {}).get(k, 0.0) for k in after[name]} for name in after}
    totals = {key: int(sum(s[key] for s in after.values())) for key in ("underruns", "dropped", "restarts")}
    in_window = {key: int(sum(s[key] for s in window.values())) for key in ("underruns", "dropped", "restarts")}
    frames_expected = float(args.fps) * wall
    # every station's clock kept up with the wall clock (a starved clock makes fewer frames
    # without dropping any: the stream falls behind real time, which viewers see as stalls)
    min_ratio = min(s["frames"] for s in window.values()) / frames_expected if window else 0.0
    return {
        "stations": count,
        "on_air_after_s": round(on_air_after, 1),
        "cpu_cores": round(cpu / wall, 3),
        "rss_mib": round(rss, 1),
        "underruns": in_window["underruns"],
        "dropped": in_window["dropped"],
        "restarts": in_window["restarts"],
        "dropped_since_start": totals["dropped"],
        "restarts_since_start": totals["restarts"],
        "min_frames_ratio": round(min_ratio, 3),
        "lines_sent": sent,
        "lines_played": int(sum(s["played"] for s in window.values())),
        "clean": totals["dropped"] == 0 and totals["restarts"] == 0 and in_window["underruns"] == 0
        and min_ratio >= MIN_FRAMES_RATIO,
    }


def _delete_queues(queues: list[str]) -> None:
    import anyio
    import aio_pika

    async def go() -> None:
        connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
        async with connection:
            channel = await connection.channel()
            for queue in queues:
                for name in (queue, queue + ".control", queue + ".dlq"):
                    await channel.queue_delete(name)

    try:
        anyio.run(go, backend="asyncio")
    except Exception:  # the bench's figures matter more than a leftover queue
        pass


def parse_counts(text: str) -> list[int]:
    """`--counts 1,2,4`; a value that is not an integer is a ValueError."""
    return [int(c) for c in str(text).split(",") if c.strip()]


def measure_counts(counts: list[int], find_max: bool, measure: Callable[[int], dict]) -> list[dict]:
    """Each count in turn, its figures printed as a JSON line as they come; with find_max, then
    one station more at a time after the last count while it is clean. A result marked
    "unserved" (the count could not even start its stations) ends the run: more would fail too."""
    results, queue = [], list(counts)
    while queue:
        result = measure(queue.pop(0))
        results.append(result)
        print(json.dumps(result), flush=True)
        if result.get("unserved"):
            break
        if find_max and not queue and result["clean"]:
            queue.append(result["stations"] + 1)
    return results


def run(args: argparse.Namespace) -> int:
    from poc.bench import musetalk_stations

    if args.face_only or musetalk_stations.face_only_problem(args):
        return musetalk_stations.run(args)  # it reports the options it cannot take
    counts = parse_counts(args.counts)
    if not counts or min(counts) < 1 or not 0 <= args.talking <= 1:
        print("poc bench stations: --counts must be positive integers and --talking between 0 and 1")
        return 2
    with tempfile.TemporaryDirectory(prefix="poc-bench-stations-") as tmp:
        run_dir = Path(tmp)
        run_dir.chmod(0o755)
        server = RtmpServer(run_dir / "nginx")
        server.start()
        try:
            results = measure_counts(counts, args.find_max, lambda count: measure(count, args, server, run_dir))
        finally:
            server.stop()
    base = next((r for r in results if r["stations"] == 1), None)
    report = {
        "engine": args.engine, "resolution": args.resolution, "fps": int(args.fps), "seconds": args.seconds,
        "talking": args.talking, "results": results,
        "largest_clean": max((r["stations"] for r in results if r["clean"]), default=0),
    }  # fmt: skip
    if base is not None:
        report["per_added_station"] = [
            {"stations": r["stations"],
             "cpu_cores": round((r["cpu_cores"] - base["cpu_cores"]) / (r["stations"] - 1), 3),
             "rss_mib": round((r["rss_mib"] - base["rss_mib"]) / (r["stations"] - 1), 1)}
            for r in results if r["stations"] > 1
        ]  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0
