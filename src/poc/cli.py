"""`python -m poc [run|send|bench|models|avatar|statechart|voices]`."""

from __future__ import annotations

import argparse
import faulthandler
import json
import signal
import sys
from pathlib import Path
from typing import Mapping, Sequence

from poc.config import Settings, load_settings
from poc.errors import StartupError, find_startup_error

# The loaded settings' secrets (settings_from_args), for the start-up error line.
_SECRETS: list[str] = []

# CLI flag → setting(s) it overrides (flags beat the environment, which beats .env)
_RUN_OVERRIDES: dict[str, str | tuple[str, ...]] = {
    "rtmp_url": "RTMP_URL",
    "resolution": "RTMP_RESOLUTION",
    "fps": "RTMP_FPS",
    # the one avatar for idle and talking: it replaces all three of the plan's avatar settings
    "avatar": ("STATIC_VIDEO_PATH", "TALKING_FACE_AVATAR_IMAGE", "TALKING_FACE_AVATAR_VIDEO"),
    "engine": "TALKING_FACE_MODEL",
    "tts": "TTS_PROVIDER",
    "queue": "RABBITMQ_QUEUE",
    "http_port": "HTTP_PORT",
    "stations": "STATIONS_FILE",
}
# Flags that set one stream: with a stations file each station sets these in the file.
_ONE_STREAM_FLAGS = ("rtmp_url", "resolution", "fps", "avatar", "engine", "tts", "queue")


def _add_run(subparsers) -> None:
    run = subparsers.add_parser("run", help="stream the avatar and consume messages (default)")
    run.add_argument("--rtmp-url")
    run.add_argument("--resolution", help="e.g. 1280x720")
    run.add_argument("--fps")
    run.add_argument("--avatar", help="avatar image or video")
    run.add_argument("--engine", help="warp or musetalk")
    run.add_argument("--tts", help="a TTS_PROVIDER value: piper, espeak, edge, pyttsx3, elevenlabs, openai, ...")
    run.add_argument("--queue")
    run.add_argument("--http-port")
    run.add_argument("--stations", help="a stations file: many streams in one process (wins over STATIONS_FILE)")
    run.set_defaults(func=_run)


def settings_from_args(
    args: argparse.Namespace, names: Mapping[str, str | tuple[str, ...]] | None = None, *, check_files: bool = True
):
    overrides = {
        env: str(getattr(args, attr))
        for attr, envs in (names or _RUN_OVERRIDES).items()
        if getattr(args, attr, None) is not None
        for env in ((envs,) if isinstance(envs, str) else envs)
    }
    env_file = Path(args.env_file) if getattr(args, "env_file", None) else None
    settings = load_settings(env_file=env_file, overrides=overrides, check_files=check_files)
    _SECRETS[:] = settings.secrets()  # masked in the one line a start-up error prints, too
    return settings


def _run(args: argparse.Namespace) -> int:
    import anyio

    settings = settings_from_args(args)  # first: a bad value is reported before the heavy imports
    if settings.stations_file is not None:
        return _run_stations(args, settings)

    from poc.app import run_service
    from poc.ops.logs import configure_logging

    configure_logging(settings.log_level, settings.secrets())
    _prepare_process()
    # A StartupError (bad avatar, engine, voice...) reaches main(), which says it in one line.
    try:
        return anyio.run(run_service, settings, backend="asyncio")  # aio-pika needs asyncio
    finally:
        _ignore_late_ctrl_c()


def _prepare_process() -> None:
    """What `run` sets up for a long life on air, once logging is configured."""
    from poc.ops.limits import raise_open_file_limit

    # A crash in native code (a codec, a model runtime) otherwise leaves only "exit -11" behind;
    # this prints every thread's Python stack to stderr first, where the service's log goes.
    faulthandler.enable()
    raise_open_file_limit()


def _run_stations(args: argparse.Namespace, base: Settings) -> int:
    """`run` with a stations file: every station checked before anything goes on air."""
    import anyio

    from poc.config import ConfigError
    from poc.stations import Station, load_stations, log_secrets

    flags = [f"--{flag.replace('_', '-')}" for flag in _ONE_STREAM_FLAGS if getattr(args, flag, None) is not None]
    if flags:
        raise ConfigError(
            f"{flags[0]} sets one stream's setting; with a stations file set it per station in the file "
            "(or in the environment for all)",
            setting="STATIONS_FILE",
        )
    env_file = Path(args.env_file) if getattr(args, "env_file", None) else None
    process_flags = {"HTTP_PORT": str(args.http_port)} if args.http_port is not None else {}

    def reload() -> list[Station]:
        """The stations file as it is now (raises ConfigError, the running stations untouched)."""
        return load_stations(base.stations_file, base, env_file=env_file, overrides=process_flags)

    stations = reload()  # before the heavy imports, like the single stream's settings
    _SECRETS[:] = log_secrets(stations, base)  # never a station's name, which every line shows

    from poc.host import run_stations
    from poc.ops.logs import configure_logging

    configure_logging(base.log_level, _SECRETS)
    _prepare_process()
    try:
        return anyio.run(run_stations, base, stations, reload, backend="asyncio")  # aio-pika needs asyncio
    finally:
        _ignore_late_ctrl_c()


def _ignore_late_ctrl_c() -> None:
    """The service has stopped (or a Ctrl-C ended its event loop's teardown): what is left is
    Python's own teardown (worker threads joined, modules freed). A Ctrl-C there, from an
    operator pressing it until the process is gone, printed a traceback of Python's internals
    or ended the process by the signal, losing its exit code; there is nothing left to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # not reset at interpreter exit, as a handler is


def _add_send(subparsers) -> None:
    send = subparsers.add_parser("send", help="publish a message to the service's queue")
    send.add_argument("text", nargs="?", help="text for the avatar to say")
    send.add_argument("--audio", type=Path, help="an audio file to play (wav, mp3, ogg, opus, flac)")
    send.add_argument(
        "--interrupt",
        action="store_true",
        help="cut the current speech, play this next; sent to the control queue, so it never "
        "waits behind queued speech",
    )
    send.add_argument(
        "--control",
        choices=["interrupt", "clear", "stop", "start"],
        help="interrupt: cut the current speech; clear: also drop the queue; stop: take the stream "
        "off air (queued messages wait); start: back on air",
    )
    send.add_argument("--voice")
    send.add_argument(
        "--expires-in",
        type=float,
        metavar="SECONDS",
        help="not played if not on air within SECONDS from now (dead-lettered instead)",
    )
    send.add_argument("--queue")
    send.add_argument("--station", help="publish to this station's queue (needs --stations or STATIONS_FILE)")
    send.add_argument("--stations", help="the stations file (wins over STATIONS_FILE)")
    send.set_defaults(func=_send)


def _send(args: argparse.Namespace) -> int:
    import anyio

    from poc.source.connection import AmqpSettings
    from poc.expiry import expires_in
    from poc.messages import InvalidMessage, MessageLimits, parse_message
    from poc.source.publish import PublishError, build_audio, build_control, build_text, publish

    # A producer shares the service's settings (its .env) but not its files: the avatar, the
    # voice and the weights are the service's to check, not a reason to refuse to publish.
    names = {"queue": "RABBITMQ_QUEUE", "stations": "STATIONS_FILE"}
    settings = settings_from_args(args, names, check_files=False)
    if sum(x is not None for x in (args.text, args.audio, args.control)) != 1:
        print("poc send: give exactly one of TEXT, --audio FILE or --control ACTION", file=sys.stderr)
        return 2
    if args.voice is not None and args.text is None:
        print("poc send: --voice applies to TEXT only (audio is played as it is)", file=sys.stderr)
        return 2
    if args.interrupt and args.control is not None:
        print("poc send: --interrupt applies to TEXT or --audio (a control message acts at once)", file=sys.stderr)
        return 2
    if args.expires_in is not None and args.control is not None:
        print("poc send: --expires-in applies to TEXT or --audio (a control message acts at once)", file=sys.stderr)
        return 2
    queue = settings.rabbitmq_queue
    if args.station is not None:
        try:
            queue = _station_queue(args, settings)
        except ValueError as error:  # ConfigError included: its text names the stations file
            print(f"poc send: {error}", file=sys.stderr)
            return 2
    try:
        if args.control:
            body, control = build_control(args.control), True
        elif args.audio:
            if not args.audio.is_file():
                print(f"poc send: audio file not found: {args.audio}", file=sys.stderr)
                return 2
            body, control = build_audio(args.audio, interrupt=args.interrupt), args.interrupt
        else:
            body, control = build_text(args.text, interrupt=args.interrupt, voice=args.voice), args.interrupt
        if args.expires_in is not None:
            body["expires_at"] = expires_in(args.expires_in)
    except ValueError as error:
        print(f"poc send: {error}", file=sys.stderr)
        return 2
    try:  # what the service would dead-letter at once is refused here, with the same reason
        parse_message(json.dumps(body).encode(), MessageLimits.from_settings(settings))
    except InvalidMessage as error:
        print(f"poc send: not sent: {error}", file=sys.stderr)
        return 2
    amqp = AmqpSettings.from_settings(settings)
    try:
        anyio.run(lambda: publish(amqp, body, queue=queue, control=control), backend="asyncio")
    except PublishError as error:
        print(f"poc send: {error}", file=sys.stderr)
        return 1
    target = queue + (".control" if control else "")
    print(f"sent to {target}: {body.get('type')} {body.get('id', '')}".rstrip())
    return 0


def _station_queue(args: argparse.Namespace, settings: Settings) -> str:
    """The queue of `send --station NAME`; ValueError saying what is missing or wrong."""
    from poc.stations import station_queue

    if args.queue is not None:
        raise ValueError("give --queue or --station, not both")
    if settings.stations_file is None:
        raise ValueError("--station needs a stations file (--stations FILE or STATIONS_FILE)")
    return station_queue(settings.stations_file, args.station, settings)


def _add_statechart(subparsers) -> None:
    chart = subparsers.add_parser("statechart", help="print (or --write) docs/statechart.md")
    chart.add_argument("--write", type=Path, nargs="?", const=Path("docs/statechart.md"))
    chart.set_defaults(func=_statechart)


def _statechart(args: argparse.Namespace) -> int:
    from poc.statechart import statechart_markdown

    text = statechart_markdown()
    if args.write:
        args.write.write_text(text, encoding="utf-8")
        print(f"wrote {args.write}")
    else:
        print(text, end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m poc", description=__doc__)
    parser.add_argument("--env-file", help="settings file (default: .env in the current folder)")
    subparsers = parser.add_subparsers(dest="command")
    _add_run(subparsers)
    _add_send(subparsers)
    _add_statechart(subparsers)
    from poc.speech import voices_cli

    voices_cli.add_parser(subparsers)
    bench = subparsers.add_parser("bench", help="measure stream, latency or MuseTalk figures")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    from poc.bench import latency, recovery, stations, stream

    stream.add_parser(bench_sub)
    latency.add_parser(bench_sub)
    recovery.add_parser(bench_sub)
    stations.add_parser(bench_sub)
    try:
        from poc.bench import musetalk as musetalk_bench

        musetalk_bench.add_parser(bench_sub)
    except ImportError:
        pass
    try:
        from poc.face.musetalk.commands import add_avatar_parser, add_models_parser

        add_models_parser(subparsers)
        add_avatar_parser(subparsers)
    except ImportError:
        pass
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args([*(argv or sys.argv[1:]), "run"])
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (StartupError, BaseExceptionGroup) as error:
        # The one place start-up errors are reported, whichever thread or task group raised
        # them: one line naming the setting, exit 2, no traceback.
        found = find_startup_error(error)
        if found is None:
            raise
        from poc.ops.logs import Redactor

        print(f"poc: cannot start: {Redactor(_SECRETS)(found.line())}", file=sys.stderr)
        return 2
