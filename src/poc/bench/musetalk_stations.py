"""`python -m poc bench stations --engine musetalk --face-only`: how many talking stations one
MuseTalk model serves on this machine, faces only.

The full `bench stations` runs the service (RabbitMQ, nginx, ffmpeg, piper), which a lent GPU
machine does not have. This bench keeps what decides how many stations a card serves: N
stations in one process, each its own MuseTalkEngine on one shared model and batcher (a private
poc.face.musetalk.shared.SharedModels), each with its own prepared avatar, warmed up once. The
weights are random, written once in the real layout into a temporary folder
(poc.face.musetalk.random_weights), so the engines' own loading code runs: full size by
default (the cost does not depend on the values), `--tiny` for the test-size stand-ins.

Each station runs on its own thread as the pipeline's face stage does (poc.pipeline.face_stage,
lay_and_render and place). The thread first warms itself up (warm_thread); then each station's
media clock starts at its own moment (staggered by a fraction of a frame). A line of voiced
audio (LINE_SECONDS at the stream's sample rate, cut into per-frame SpeechSlots by the media
SlotCutter) is placed `lead_frames` after the station's current frame and after the previous
line with room for the pause between messages, heard whole, fed to the engine in pieces of the
batch size at once, and finished: what the face stage does when a message's speech has all come
(SpeechEnd renders every frame still waiting), as it has within a fraction of the line with
piper or a vendor's stream, both faster than real time. The cross-station batcher takes the rows
earliest show time first, so one station's burst does not delay another's first frames. With `--talking F` each station starts a
line every LINE_SECONDS / F seconds (the stations' lines staggered across that period), so it
talks about F of the time; a station still busy with a line when the window ends starts no more,
so an overloaded count lasts about one slowed line longer than `--seconds`, not N times longer.

Judged per frame: a RenderedFrame that comes back after its show time (clock start + index/fps)
is an underrun; a frame whose patch is None inside speech is an engine failure (the line is
voiced throughout, so every frame goes through the model); a frame returned out of order, twice
or not at all is an order error. Left out: the compositor, the idle face, the audio, the
encoders and RTMP, which the full `bench stations` measures on a CPU.

Prints one JSON line per count, then a summary JSON; `largest_clean` is the largest count with
0 underruns, 0 failures and 0 order errors. `--find-max` goes on up one station at a time from
the last count while clean. Imports nothing of the service (no pydantic, no aio-pika), so it
runs where only torch, diffusers, transformers, numpy, cv2, attrs and anyio are installed:
`python -m poc.bench.musetalk_stations --counts ...` takes the same options without the CLI.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import attrs
import numpy as np

from poc.bench.harness import process_tree_rss_mib
from poc.bench.stations import LINE_SECONDS, measure_counts, parse_counts

if TYPE_CHECKING:
    from poc.face.base import RenderedFrame
    from poc.face.musetalk.batcher import BatchCounters
    from poc.face.musetalk.engine import MuseTalkEngine
    from poc.face.musetalk.shared import ModelLease

# The service's TTS_SAMPLE_RATE default, written out because importing poc.config would import
# its settings (pydantic), which the GPU machine lacks.
SAMPLE_RATE = 44100
DEFAULT_BATCH_SIZE = 8
WARM_FRAME = 10**9  # where each station thread's warm-up frames sit on its clock (warm_thread)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The face-only options, on `bench stations`'s parser (which holds --counts, --find-max,
    --engine, --resolution, --fps, --seconds and --talking). Nothing heavy is imported here:
    the CLI builds this parser at every start; an unknown --dtype is refused when the model loads."""
    group = parser.add_argument_group("face only (--engine musetalk --face-only)")
    group.add_argument(
        "--face-only", action="store_true",
        help="MuseTalk engines on one shared model in this process, no service, no encoders (runs on a bare GPU machine)",
    )  # fmt: skip
    group.add_argument("--tiny", action="store_true", help="tiny stand-in networks instead of the full-size ones")
    group.add_argument("--device", default=None, help="cuda, cpu or auto (default)")
    group.add_argument("--dtype", default=None, help="float16, bfloat16, float32 or auto (default: float16 on a GPU)")
    group.add_argument("--batch-size", type=int, default=None, help=f"each engine's batch size (default {DEFAULT_BATCH_SIZE})")
    group.add_argument(
        "--landmarks", type=Path, default=None,
        help="the default avatar's 68 landmarks at --resolution (.npy), for a machine without dlib's model",
    )  # fmt: skip


def face_only_problem(args: argparse.Namespace) -> str:
    """Why these options cannot run ('' when they can): the face-only options need --face-only,
    and --face-only needs --engine musetalk."""
    if args.face_only:
        if args.engine != "musetalk":
            return "--face-only needs --engine musetalk"
        if args.batch_size is not None and args.batch_size < 1:
            return "--batch-size must be at least 1"
        return ""
    given = [name for name in ("tiny", "device", "dtype", "batch_size", "landmarks") if getattr(args, name) not in (None, False)]
    if given:
        return f"--{given[0].replace('_', '-')} needs --face-only (the full bench takes the service's settings)"
    return ""


# --- one station --------------------------------------------------------------------------------


@attrs.frozen
class StationPlan:
    """When one station's clock starts and when it starts each line (monotonic seconds)."""

    name: str
    clock_start: float
    first_line: float  # the first line's due time
    period: float  # seconds between two lines' due times
    stop_at: float  # no line is started at or after this (by plan or in fact); the one under way is finished
    line_seconds: float = LINE_SECONDS


@attrs.define
class StationTally:
    """What one station did. fed / returned: frame indices, in the order fed and returned."""

    name: str
    fed: list[int] = attrs.field(factory=list)
    returned: list[int] = attrs.field(factory=list)
    lines: int = 0
    talking_in_window: int = 0  # frames fed that are shown before plan.stop_at
    underruns: int = 0
    failures: int = 0  # frames without a face inside speech
    worst_late_s: float = 0.0  # the latest frame's lateness (0 when none was late)
    error: str = ""  # what stopped the station's thread, if anything did

    @property
    def order_errors(self) -> int:
        """Frames not returned exactly once, in the order fed."""
        mismatched = sum(a != b for a, b in zip(self.fed, self.returned))
        return mismatched + abs(len(self.fed) - len(self.returned))


def voiced_line(seconds: float, sample_rate: int) -> np.ndarray:
    """int16 speech that never falls to MuseTalk's silence level (engine.voiced_audio), so every
    frame of the line goes through the model."""
    from poc.face.musetalk.engine import voiced_audio

    return (voiced_audio(int(seconds * sample_rate), sample_rate) * (32767 / 2)).astype(np.int16)


def run_station(engine: MuseTalkEngine, plan: StationPlan, tally: StationTally, lead: int | None = None) -> None:
    """Speak lines on this station until plan.stop_at (the face stage's place + lay_and_render,
    without the compositor); fills `tally`. lead: frames ahead of the clock a line starts
    (default: as the face stage sets it)."""
    from poc.media.timeline import SlotCutter
    from poc.pipeline.face_stage import lead_frames_for
    from poc.pipeline.options import PipelineOptions
    from poc.speech.base import SpeechChunk

    fps, rate = engine.fps, engine.sample_rate
    lead = lead_frames_for(engine, fps) if lead is None else lead
    gap = max(1, round(PipelineOptions().gap_seconds * fps))
    audio = voiced_line(plan.line_seconds, rate)
    due, last_end = plan.first_line, None
    try:
        while due < plan.stop_at:
            _sleep_until(due)
            if time.monotonic() >= plan.stop_at:  # behind with its lines: the window is over
                break
            now_frame = math.floor((time.monotonic() - plan.clock_start) * fps)
            start = now_frame + lead if last_end is None else max(now_frame + lead, last_end + gap)
            cutter = SlotCutter(start, rate, fps)
            slots = cutter.cut(SpeechChunk(audio=audio)) + cutter.flush()
            utterance = engine.start_utterance()
            utterance.hear(slots)  # the line's audio arrives whole, as the face stage hands it over
            tally.lines += 1
            step = engine.batch_size
            for begin in range(0, len(slots), step):
                piece = slots[begin : begin + step]
                tally.fed += [slot.index for slot in piece]
                tally.talking_in_window += sum(plan.clock_start + s.index / fps < plan.stop_at for s in piece)
                frames = utterance.feed(piece)
                if begin + step >= len(slots):
                    frames += utterance.finish()
                _judge(frames, time.monotonic(), plan.clock_start, fps, tally)
            last_end = start + len(slots)
            due += plan.period
    except Exception as error:  # reported with the count, never silently lost
        tally.error = f"{type(error).__name__}: {error}"


def _judge(frames: Sequence[RenderedFrame], arrived: float, clock_start: float, fps: int, tally: StationTally) -> None:
    for frame in frames:
        tally.returned.append(frame.index)
        late = arrived - (clock_start + frame.index / fps)
        if late > 0:
            tally.underruns += 1
            tally.worst_late_s = max(tally.worst_late_s, late)
        if frame.patch is None:
            tally.failures += 1


def _sleep_until(moment: float) -> None:
    left = moment - time.monotonic()
    if left > 0:
        time.sleep(left)


# --- one count ----------------------------------------------------------------------------------


def plans(names: Sequence[str], fps: int, seconds: float, talking: float, begin: float,
          line_seconds: float = LINE_SECONDS, stagger: bool = True) -> list[StationPlan]:  # fmt: skip
    """Clocks staggered by a fraction of a frame; lines every line_seconds / talking, station i's
    first at i/N of that period (stagger False: all at the start; talking 0: no lines)."""
    n = len(names)
    period = line_seconds / talking if talking > 0 else math.inf
    stop_at = begin + seconds
    return [
        StationPlan(
            name=name,
            clock_start=begin + i / (n * fps),
            first_line=(begin + (i / n if stagger else 0) * period) if talking > 0 else stop_at,
            period=period,
            stop_at=stop_at,
            line_seconds=line_seconds,
        )
        for i, name in enumerate(names)
    ]


def run_stations(
    engines: Sequence[MuseTalkEngine], seconds: float, talking: float, line_seconds: float = LINE_SECONDS,
    leads: Sequence[int | None] | None = None, stagger: bool = True,
) -> tuple[list[StationTally], BatchCounters, BatchCounters, float]:  # fmt: skip
    """Every engine speaks on its own thread for `seconds`; returns the tallies, the batch
    counters before and after, and the wall time from the clocks' start to the last station's
    end. Each thread first warms itself up (warm_thread); the clocks start once all have.
    leads: per station, frames ahead of its clock that a line starts (None: as the face stage
    sets it); stagger: see plans."""
    fps = engines[0].fps
    tallies = [StationTally(e.station) for e in engines]
    leads = list(leads) if leads is not None else [None] * len(engines)
    start: dict[str, Any] = {}

    def start_clocks() -> None:  # run by the last thread to arrive, before any goes on
        start["begin"] = time.monotonic() + 0.05
        start["plans"] = plans([e.station for e in engines], fps, seconds, talking, start["begin"], line_seconds, stagger)
        start["before"] = engines[0].batching

    warmed = threading.Barrier(len(engines), action=start_clocks)

    def station(k: int) -> None:
        try:
            warm_thread(engines[k])
        except Exception as error:
            tallies[k].error = f"warm-up: {type(error).__name__}: {error}"
        warmed.wait()
        if not tallies[k].error:
            run_station(engines[k], start["plans"][k], tallies[k], leads[k])

    threads = [
        threading.Thread(target=station, args=(k,), name=f"station-{e.station}", daemon=True)
        for k, e in enumerate(engines)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tallies, start["before"], engines[0].batching, time.monotonic() - start["begin"]


def warm_thread(engine: MuseTalkEngine) -> None:
    """One short utterance on this thread before its clock starts. On CUDA each thread keeps its
    own cuDNN handles and tuned kernels (poc.face.musetalk.batcher), and a station's audio
    features run on its own thread, so a fresh thread's first line would stall for seconds on
    tuning that the engine's warm_up (on another thread) did not cover. The frames sit far
    beyond any line's (counter WARM_FRAME), so this feed leaves the station's deadline anchor
    below every real one, and real feeds set it (StationClock keeps the highest bound)."""
    from poc.media.timeline import SlotCutter
    from poc.speech.base import SpeechChunk

    cutter = SlotCutter(WARM_FRAME, engine.sample_rate, engine.fps)
    slots = cutter.cut(SpeechChunk(audio=voiced_line(engine.batch_size / engine.fps, engine.sample_rate))) + cutter.flush()
    utterance = engine.start_utterance()
    utterance.hear(slots)
    utterance.feed(slots)
    utterance.finish()


def count_report(
    tallies: Sequence[StationTally], before: BatchCounters, after: BatchCounters, seconds: float, fps: int,
    talking: float,
) -> dict[str, Any]:  # fmt: skip
    """One count's figures: what the stations did, and what the shared batcher did meanwhile."""
    frames = sum(len(t.returned) for t in tallies)
    batches = after.batches - before.batches
    rows = sum(after.rows.values()) - sum(before.rows.values())
    shapes = {size: runs - before.shapes.get(size, 0) for size, runs in sorted(after.shapes.items())}
    errors = sorted({t.error for t in tallies if t.error})
    report = {
        "stations": len(tallies),
        "talking": talking,
        # of the frames shown within the window (the last line may run past it)
        "talking_share": round(sum(t.talking_in_window for t in tallies) / (len(tallies) * seconds * fps), 3),
        "lines": sum(t.lines for t in tallies),
        "frames_fed": sum(len(t.fed) for t in tallies),
        "frames_rendered": frames,
        "underruns": sum(t.underruns for t in tallies),
        "worst_station_underruns": max((t.underruns for t in tallies), default=0),
        "worst_late_ms": round(1000 * max((t.worst_late_s for t in tallies), default=0.0), 1),
        "engine_failures": sum(t.failures for t in tallies),
        "order_errors": sum(t.order_errors for t in tallies),
        "batches": batches,
        "mean_rows_per_batch": round(rows / batches, 2) if batches else 0.0,
        "mixed_batches": after.mixed_batches - before.mixed_batches,
        "failed_batches": after.failed_batches - before.failed_batches,
        "padded_rows": after.padded_rows - before.padded_rows,
        "batch_shapes": {str(size): runs for size, runs in shapes.items() if runs},
        "errors": errors,
    }
    report["clean"] = (
        report["underruns"] == 0 and report["engine_failures"] == 0 and report["order_errors"] == 0 and not errors
    )
    return report


# --- the bench ----------------------------------------------------------------------------------


class FaceOnlyBench:
    """Random weights written once, one shared model held for the whole run, and engines built
    and warmed up as the counts need them (station i keeps its engine for every later count)."""

    def __init__(self, args: argparse.Namespace, work_dir: Path) -> None:
        from poc.face.avatar import load_avatar
        from poc.face.landmarks import remember_landmarks
        from poc.face.musetalk import _deps
        from poc.face.musetalk.commands import parse_size
        from poc.face.musetalk.model import resolve_device
        from poc.face.musetalk.random_weights import write_random_weights
        from poc.face.musetalk.shared import SharedModels
        from poc.paths import DEFAULT_AVATAR

        self.torch = _deps.require("torch")
        _deps.quiet_libraries()
        self.size = parse_size(args.resolution)
        self.fps = int(args.fps)
        self.batch_size = args.batch_size or DEFAULT_BATCH_SIZE
        self.dtype = args.dtype or "auto"
        self.device = resolve_device(args.device or "auto")
        self.cuda = self.device.startswith("cuda")
        self.setup_s: dict[str, float] = {}
        self.work_dir = work_dir
        t0 = time.perf_counter()
        self.models_dir = write_random_weights(work_dir / "models", tiny=args.tiny, device=self.device)
        self.setup_s["weights_written"] = round(time.perf_counter() - t0, 1)
        if self.cuda:
            self.torch.cuda.empty_cache()  # the networks drawn for the files are gone: give back their memory
        self.avatar = load_avatar(DEFAULT_AVATAR, *self.size)
        if args.landmarks is not None:
            remember_landmarks(self.avatar.frames[0], np.load(args.landmarks))
        t0 = time.perf_counter()
        self.models: SharedModels = SharedModels()  # private: this bench's stations only
        # held for the whole run, so the model stays loaded (and its kernels tuned) between counts
        self.anchor: ModelLease | None = self.models.acquire(self.models_dir, self.device, self.dtype)
        self.setup_s["model_loaded"] = round(time.perf_counter() - t0, 1)
        self.setup_s["engines_built"] = 0.0
        self.engines: list[MuseTalkEngine] = []
        self.dtype_name = str(self.anchor.model.dtype).removeprefix("torch.")
        try:
            self.engines_for(1)  # the avatar's faults (no face found) stop the bench here, before any count
        except BaseException:
            self.close()
            raise

    def engines_for(self, count: int) -> list[MuseTalkEngine]:
        from poc.face.musetalk.engine import MuseTalkEngine

        t0 = time.perf_counter()
        while len(self.engines) < count:
            engine = MuseTalkEngine(
                self.avatar, self.models_dir, self.device, self.batch_size, self.fps, SAMPLE_RATE,
                cache_dir=self.work_dir / "avatars", dtype=self.dtype, station=f"s{len(self.engines)}",
                models=self.models,
            )  # fmt: skip
            try:
                engine.warm_up()
            except BaseException:
                engine.close()  # its seat would keep counting toward the batch limit
                raise
            self.engines.append(engine)
        self.setup_s["engines_built"] = round(self.setup_s["engines_built"] + time.perf_counter() - t0, 1)
        return self.engines[:count]

    def measure(self, count: int, seconds: float, talking: float) -> dict[str, Any]:
        from poc.pipeline.face_stage import lead_frames_for

        engines = self.engines_for(count)
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats(self.device)
        tallies, before, after, wall = run_stations(engines, seconds, talking)
        report = count_report(tallies, before, after, seconds, self.fps, talking)
        report["wall_s"] = round(wall, 1)
        report["lead_frames"] = max(lead_frames_for(e, self.fps) for e in engines)
        report["peak_gpu_mib"] = round(self.torch.cuda.max_memory_allocated(self.device) / 2**20) if self.cuda else None
        report["rss_mib"] = round(process_tree_rss_mib(os.getpid()), 1)
        return report

    def describe(self, tiny: bool) -> dict[str, Any]:
        first = self.engines[0] if self.engines else None
        name = self.torch.cuda.get_device_name(self.torch.device(self.device)) if self.cuda else "CPU"
        return {
            "device": f"{self.device} ({name})", "dtype": self.dtype_name, "weights": "tiny" if tiny else "full size",
            "torch": self.torch.__version__, "batch_size": self.batch_size,
            "warm_up_fps": round(first.measured_fps, 1) if first and first.measured_fps else None,
            "setup_s": dict(self.setup_s),
        }  # fmt: skip

    def close(self) -> None:
        for engine in self.engines:
            engine.close()
        self.engines = []
        if self.anchor is not None:
            self.anchor.release()
            self.anchor = None


def run(args: argparse.Namespace) -> int:
    """`bench stations --face-only`: each count, then the summary (see the module docstring)."""
    from poc.face.base import EngineError

    counts = parse_counts(args.counts)
    problem = face_only_problem(args)
    if problem or not counts or min(counts) < 1 or not 0 <= args.talking <= 1 or args.seconds <= 0:
        problem = problem or "--counts must be positive integers, --talking between 0 and 1, --seconds positive"
        print(f"poc bench stations: {problem}")
        return 2
    with tempfile.TemporaryDirectory(prefix="poc-bench-musetalk-stations-") as tmp:
        try:
            bench = FaceOnlyBench(args, Path(tmp))
        except (EngineError, argparse.ArgumentTypeError, OSError, ValueError) as e:  # settings, device, files, avatar
            print(f"poc bench stations: {e}", file=sys.stderr)
            return 2
        def measure(count: int) -> dict[str, Any]:
            try:
                return bench.measure(count, args.seconds, args.talking)
            except EngineError as e:  # a station that cannot start (out of GPU memory at warm-up)
                return {"stations": count, "errors": [str(e)], "clean": False, "unserved": True}

        try:
            results = measure_counts(counts, args.find_max, measure)
            described = bench.describe(args.tiny)
        finally:
            bench.close()
    report = {
        "engine": "musetalk", "face_only": True, **described, "resolution": args.resolution, "fps": int(args.fps),
        "sample_rate": SAMPLE_RATE, "seconds": args.seconds, "talking": args.talking, "line_seconds": LINE_SECONDS,
        "results": results,
        "largest_clean": max((r["stations"] for r in results if r["clean"]), default=0),
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `stations` (`bench stations` with every option, these included) on a bench
    parser built without poc's CLI, as scripts/gpu_check.sh builds one."""
    from poc.bench import stations

    stations.add_parser(subparsers)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m poc.bench.musetalk_stations [bench stations options]`: the face-only bench
    without poc's CLI, whose settings import pydantic (absent on the GPU machine)."""
    parser = argparse.ArgumentParser(prog="python -m poc.bench.musetalk_stations")
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["stations", "--engine", "musetalk", "--face-only", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
