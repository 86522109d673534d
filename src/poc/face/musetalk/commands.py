"""CLI glue: `python -m poc models check|fetch` and `python -m poc avatar prepare`.

Each command sets `func` on its namespace; `func(args)` returns the exit code (0 ok, 1 problems
found, 2 cannot run). Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from poc.face.avatar import AvatarError, load_avatar
from poc.face.base import EngineError
from poc.face.loop import describe
from poc.paths import DEFAULT_MODELS_DIR


def parse_size(text: str) -> tuple[int, int]:
    """'1280x720' -> (1280, 720)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1280x720, got {text!r}") from None
    if not (16 <= w <= 7680 and 16 <= h <= 4320):
        raise argparse.ArgumentTypeError(f"size {w}x{h} is out of range (16..7680 x 16..4320)")
    return w, h


def parse_fps(text: str) -> int:
    """'30' -> 30, within RTMP_FPS's range (1..60)."""
    try:
        fps = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"fps must be a whole number, got {text!r}") from None
    if not 1 <= fps <= 60:
        raise argparse.ArgumentTypeError(f"fps {fps} is out of range (1..60)")
    return fps


def add_models_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `models check|fetch [--models-dir D]`."""
    parser = subparsers.add_parser("models", help="check or download the MuseTalk v1.5 weights")
    sub = parser.add_subparsers(dest="models_command", required=True, metavar="{check,fetch}")
    check = sub.add_parser("check", help="say what is missing or corrupt under the models directory")
    fetch = sub.add_parser("fetch", help="download what is missing from the Hugging Face hub, then check")
    for p, func in ((check, run_check), (fetch, run_fetch)):
        p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR, help="default: %(default)s")
        p.set_defaults(func=func)


def add_avatar_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `avatar prepare <image-or-video> [--size WxH] [--fps N] [--models-dir D] [--device ...] [--dtype ...]`."""
    from poc.face.musetalk.prepare import DEFAULT_CACHE_DIR

    parser = subparsers.add_parser("avatar", help="prepare an avatar for MuseTalk (cached)")
    sub = parser.add_subparsers(dest="avatar_command", required=True, metavar="{prepare}")
    p = sub.add_parser("prepare", help="a video's idle loop, then landmarks, crop boxes, masks and reference latents, cached on disk")
    p.add_argument("source", type=Path, help="avatar image or video")
    p.add_argument("--size", type=parse_size, default=(1280, 720), help="output size WxH (default 1280x720)")
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR, help="default: %(default)s")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    p.add_argument("--dtype", default="auto", help="float16, bfloat16, float32 or auto (default; as TALKING_FACE_DTYPE)")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="default: %(default)s")
    p.add_argument("--fps", type=parse_fps, default=30, help="stream frame rate the video loop is planned for (default 30, as RTMP_FPS)")
    p.set_defaults(func=run_prepare)


def run_check(args: argparse.Namespace) -> int:
    from poc.face.musetalk.weights import check_weights

    return _report(check_weights(args.models_dir), args.models_dir)


def run_fetch(args: argparse.Namespace) -> int:
    from poc.face.musetalk.weights import fetch_weights

    return _report(fetch_weights(args.models_dir), args.models_dir)


def _report(problems: list[str], models_dir: Path) -> int:
    """One line per problem on stderr (exit 1), or a line saying the weights are complete; then
    one line saying which blend mask the engine will use (still exit 0 when it is the fallback)."""
    for line in problems:
        print(line, file=sys.stderr)
    if not problems:
        print(f"MuseTalk v1.5 weights in {models_dir} are complete")
    print(mask_line(models_dir, problems))
    return 1 if problems else 0


def mask_line(models_dir: Path, problems: list[str]) -> str:
    """Which blend mask preparation will cut, and from which parser file, with that file's
    sha256: `models fetch` takes it from a third-party hub copy, so an operator can compare it
    with the digest of the release they trust."""
    from poc.face.musetalk.weights import PARSER_ORIGIN, PARSER_WEIGHTS, file_sha256

    path = PARSER_WEIGHTS.find(Path(models_dir))
    copy = f"a third-party copy of {PARSER_ORIGIN}, not verified to be identical"
    if path is None:
        return (
            f"blend mask: landmark polygon (upstream's jaw rule drawn from the landmarks), as "
            f"{Path(models_dir) / PARSER_WEIGHTS.path} is not there; for upstream's parsed jaw "
            f"mask download {PARSER_WEIGHTS.where(Path(models_dir))}, {copy}"
        )
    digest = file_sha256(path)
    if any(str(path) in line for line in problems):
        return (
            f"blend mask: none, as the face-parsing file {path} (sha256 {digest}) is unusable (above): "
            f"replace it, or remove it to use the landmark polygon"
        )
    return f"blend mask: upstream's parsed jaw, parser {path} (sha256 {digest}; the hub repo {PARSER_WEIGHTS.repo} is {copy})"


def run_prepare(args: argparse.Namespace) -> int:
    from poc.face.musetalk.model import load_vae
    from poc.face.musetalk.parsing import load_parser
    from poc.face.musetalk.prepare import prepare_avatar, vae_fingerprint

    t0 = time.perf_counter()
    try:
        avatar = load_avatar(args.source, *args.size, fps=args.fps, loop_cache=args.cache_dir)
        if avatar.cycle.plan is not None:  # a video: its loop was planned (and cached) with its frames
            print(f"loop: {describe(avatar.cycle.plan)}")
        codec = load_vae(args.models_dir, args.device, args.dtype)
        parser = load_parser(args.models_dir, codec.device)
        prepared = prepare_avatar(avatar, codec.encode_reference, args.cache_dir, vae_fingerprint(args.models_dir), parser)
    except (AvatarError, EngineError) as e:
        print(f"avatar prepare: {e}", file=sys.stderr)
        return 2
    how = "loaded from cache" if prepared.from_cache else "prepared"
    x1, y1, x2, y2 = prepared.geometry[0].box
    n = len(prepared.geometry)
    mask = "landmark masks" if prepared.parsed_frames == 0 else f"parsed jaw masks on {prepared.parsed_frames} of {n}"
    print(
        f"{how}: {args.source} ({len(avatar.frames)} frame(s) at {args.size[0]}x{args.size[1]}, "
        f"face box {x2 - x1}x{y2 - y1} at ({x1},{y1}), {mask}) in {time.perf_counter() - t0:.1f} s -> "
        f"{args.cache_dir / prepared.key}"
    )
    return 0
