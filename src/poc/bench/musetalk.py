"""`python -m poc bench musetalk`: what MuseTalk v1.5 costs per frame on this machine.

Builds the real architectures with random weights in memory (same FLOPs and memory traffic as
the real checkpoints, no files needed; `--tiny` for the test-size stand-ins), prepares the
default avatar's geometry at the output size, and renders batches of voiced frames through the
engine's own batch path. Each stage is timed with the GPU drained at its end: features (Whisper
over the batch's audio window), UNet, VAE decode (including the copy to the host), and blend
(resize + feathered paste). Prints one markdown table row per batch size.

The two batcher columns put the same batches through a CrossStationBatcher, as the service runs
them: one deep (UNet + decode + copy to the host, then the next batch) and two deep (the next
batch queued on the device while the host copies and blends the last: batcher.py). Each is one
render call of several batches, so it runs one Whisper pass for all of them, as the engine does,
where the serial columns run one per batch; compare the two batcher columns with each other.

The last column is issue 11's latency goal, first frame: from a chunk of speech reaching a
new utterance (heard, then its first batch fed, as the face stage does) to its first faces back:
one Whisper pass, one batch through UNet and VAE, the blend (median of three).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

SAMPLE_RATE_16K = 16000
STREAM_RATE = 48000  # the stream's audio, which the engine resamples to 16 kHz itself
GPU_BATCHES = [1, 4, 8, 16, 32]
CPU_BATCHES = [1, 4]  # full size on a CPU is ~8 s/frame: keep the run to minutes


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive, got {text!r}")
    return values


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `musetalk` on the `bench` subcommand's subparsers."""
    from poc.face.musetalk.commands import parse_size
    from poc.face.musetalk.model import DTYPES

    p = subparsers.add_parser("musetalk", help="ms/frame per stage and fps of MuseTalk v1.5 (random weights)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    p.add_argument(
        "--dtype", default="auto", choices=DTYPES,
        help="precision (default auto: float16 on a GPU, float32 on a CPU)",
    )
    p.add_argument(
        "--batch-sizes", type=_int_list, default=None,
        help=f"comma-separated (default {','.join(map(str, GPU_BATCHES))} on a GPU, {','.join(map(str, CPU_BATCHES))} on a CPU)",
    )
    p.add_argument("--tiny", action="store_true", help="tiny stand-in networks instead of the full-size ones")
    p.add_argument("--channels-last", action="store_true", help="UNet and VAE in NHWC (MuseTalkModel.tune)")
    p.add_argument("--compile", action="store_true", help="torch.compile the VAE decoder (MuseTalkModel.tune); each batch size compiles in its warm-up")
    p.add_argument("--repeats", type=int, default=None, help="timed batches per size (default 5 on a GPU, 1 on a CPU)")
    p.add_argument("--fps", type=int, default=30, help="stream frame rate to compare against (default 30)")
    p.add_argument("--size", type=parse_size, default=(1280, 720), help="output size WxH (default 1280x720)")
    p.add_argument(
        "--landmarks", type=Path, default=None,
        help="the default avatar's 68 landmarks at --size (.npy), for a GPU machine without dlib's model "
        "(scripts/gpu_check.sh prepare makes it)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from poc.face.base import EngineError

    try:
        return _run(args)
    except EngineError as e:
        print(f"bench musetalk: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from poc.face.musetalk import _deps
    from poc.face.musetalk.engine import voiced_audio
    from poc.face.musetalk.model import build_random, resolve_device
    from poc.face.musetalk.render import STAGES, FrameRenderer, StageTimer

    torch = _deps.require("torch")
    _deps.quiet_libraries()
    device = resolve_device(args.device)
    gpu = device.startswith("cuda")
    batches = args.batch_sizes or (GPU_BATCHES if gpu or args.tiny else CPU_BATCHES)
    repeats = args.repeats or (5 if gpu or args.tiny else 1)

    t0 = time.perf_counter()
    model = build_random(device, tiny=args.tiny, dtype=args.dtype)
    model.tune(channels_last=args.channels_last, compile_decoder=args.compile)
    build_s = time.perf_counter() - t0
    avatar, prepared = _bench_avatar(args.size, args.landmarks)
    renderer = FrameRenderer(model, prepared, avatar, args.fps)
    seconds = max(batches) / args.fps + 1.0
    audio = voiced_audio(int(seconds * SAMPLE_RATE_16K))

    params = sum(p.numel() for p in model.unet.parameters()) / 1e6
    print(f"MuseTalk v1.5 {'tiny stand-in' if args.tiny else 'full size'}, random weights (UNet {params:.0f} M params, built in {build_s:.1f} s)")
    print(f"device: {_describe(torch, device)}; dtype {_dtype_label(model.dtype, args.dtype)}; torch {torch.__version__}; output {args.size[0]}x{args.size[1]}; {repeats} timed batch(es) per size after one warm-up{_tuning(args)}")
    print()
    names = {"features": "features", "unet": "UNet", "vae": "VAE decode", "blend": "blend"}
    calls = max(2, repeats)  # batches per render call through the batcher: at least two to overlap
    header = ["batch", *(f"{names[s]} ms/frame" for s in STAGES), "total ms/frame", "end-to-end fps", f"real time at {args.fps} fps"]
    if gpu:
        header.append("peak GPU MiB")
    header += [f"batcher fps, one deep ({calls} batches/call)", "batcher fps, two deep", "first frame ms"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for b in batches:
        frames = [(n, n) for n in range(b)]
        renderer.timer = None
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        renderer.render(frames, audio)  # warm-up: allocations, kernel selection
        timer = StageTimer()
        renderer.timer = timer
        start = time.perf_counter()
        for _ in range(repeats):
            renderer.render(frames, audio)
        wall = time.perf_counter() - start
        per_frame = [1000 * timer.seconds[s] / timer.frames for s in STAGES]
        fps = timer.frames / wall
        row = [str(b), *(f"{v:.1f}" for v in per_frame), f"{1000 * wall / timer.frames:.1f}", f"{fps:.2f}",
               "yes" if fps >= args.fps else "no"]
        if gpu:
            row.append(f"{torch.cuda.max_memory_allocated() / 2**20:.0f}")
        row += [f"{_batcher_fps(renderer, audio, b, calls, pipelined):.2f}" for pipelined in (False, True)]
        row.append(f"{1000 * _first_frame_seconds(renderer, args.fps, b):.0f}")
        print("| " + " | ".join(row) + " |", flush=True)
    return 0


def _first_frame_seconds(renderer, fps: int, batch: int, runs: int = 3) -> float:
    """Issue 11's latency goal, measured as the face stage meets it: seconds from a chunk of
    speech reaching a new utterance (hear, then feed the first `batch` slots) to its first faces
    coming back; the median of `runs`. That is one Whisper pass over the chunk, one batch through
    the UNet and VAE, and the blend. The chunk reaches a second past the batch, so every frame of
    the batch has its look-ahead and the batch runs whole, at a size already warmed up; the rest
    is never fed (an utterance may be dropped), so no other batch size is tuned or compiled."""
    from poc.face.base import SpeechSlot
    from poc.face.musetalk.engine import MuseTalkUtterance, voiced_audio

    renderer.timer = None
    per_frame = STREAM_RATE // fps
    count = batch + fps
    speech = (voiced_audio(count * per_frame, STREAM_RATE) * 32767).astype(np.int16)
    slots = [SpeechSlot(index=k, audio=speech[k * per_frame : (k + 1) * per_frame]) for k in range(count)]
    times = []
    for _ in range(runs):
        utterance = MuseTalkUtterance(renderer, fps, STREAM_RATE)
        start = time.perf_counter()
        utterance.hear(slots)
        first = utterance.feed(slots[:batch])
        times.append(time.perf_counter() - start)
        if len(first) != batch or any(frame.patch is None for frame in first):
            raise RuntimeError(f"the first batch gave {len(first)} frames, not {batch} faces")
    return float(np.median(times))


def _batcher_fps(serial, audio: np.ndarray, batch: int, calls: int, pipelined: bool) -> float:
    """Frames/s of one render call of `calls` batches of `batch` frames (the serial bench's
    audio windows, repeated) through a batcher of its own: two deep with the model split into
    launch and collect (render.ModelStages), one deep with the whole batch as one function."""
    from functools import partial

    from poc.face.musetalk.batcher import CrossStationBatcher
    from poc.face.musetalk.render import FrameRenderer, ModelStages, unet_and_decode

    model = serial.model
    batcher = CrossStationBatcher(ModelStages(model) if pipelined else partial(unet_and_decode, model))
    try:
        renderer = FrameRenderer(model, serial.prepared, serial.avatar, serial.fps, seat=batcher.join("bench", batch))
        renderer.render([(n, n) for n in range(batch)], audio)  # warm-up on the batcher's thread
        frames = [(k % batch, k) for k in range(batch * calls)]
        start = time.perf_counter()
        renderer.render(frames, audio)
        return len(frames) / (time.perf_counter() - start)
    finally:
        batcher.close()


def _bench_avatar(size: tuple[int, int], landmarks_file: Path | None = None):
    """The default portrait's real geometry at the output size, with random reference latents
    (their values do not change the cost, and encoding them would need VAE weights)."""
    from poc.face.avatar import load_avatar
    from poc.face.musetalk.geometry import frame_geometry
    from poc.face.musetalk.prepare import PreparedAvatar
    from poc.paths import DEFAULT_AVATAR

    avatar = load_avatar(DEFAULT_AVATAR, *size)
    if landmarks_file is not None:
        landmarks = np.load(landmarks_file).astype(np.float32)
    else:
        from poc.face.landmarks import detect_landmarks

        landmarks = detect_landmarks(avatar.frames[0])
    geometry = frame_geometry(landmarks, *size)
    latents = np.random.default_rng(0).standard_normal((1, 8, 32, 32)).astype(np.float32)
    return avatar, PreparedAvatar(key="bench", geometry=(geometry,), latents=latents, landmarks=landmarks[None])


def _tuning(args: argparse.Namespace) -> str:
    """'; channels-last; VAE decoder compiled' for the options given ('' for none)."""
    chosen = [label for flag, label in ((args.channels_last, "channels-last"), (args.compile, "VAE decoder compiled")) if flag]
    return "".join(f"; {label}" for label in chosen)


def _dtype_label(dtype, asked: str) -> str:
    """'float16' or, when the precision was left to the device, 'float16 (auto)'."""
    name = str(dtype).removeprefix("torch.")
    return f"{name} (auto)" if asked == "auto" else name


def _describe(torch, device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(torch.device(device))} (CUDA {torch.version.cuda})"
    import os

    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, no GPU"
