"""`python -m poc voices [--provider NAME] [--json]`: the voices a speech provider offers.

Local providers list what is installed here (piper: the shipped voice and models/piper/;
espeak: `espeak-ng --voices`; pyttsx3: its driver's voices); edge and the API vendors are asked
live. Settings come from the service's own loader (environment, .env, --env-file), so the
configured provider, key and endpoint apply. Exit codes: 0 listed, 1 the provider failed
(unreachable, key refused), 2 bad settings or an unknown provider; errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from poc.speech.base import AuthRejected, InvalidSpeechRequest, SpeechError, VoiceInfo

_ALIASES = {"edge-tts": "edge"}  # the plan's spelling, as TTS_PROVIDER_LOCAL accepts it


def add_parser(subparsers: Any) -> None:
    voices = subparsers.add_parser("voices", help="list the voices a speech provider offers")
    voices.add_argument("--provider", help="provider to ask (default: the configured one)")
    voices.add_argument("--json", action="store_true", help="print JSON instead of a table")
    voices.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """The `voices` command. A ConfigError from loading the settings propagates (the CLI's
    main prints it, exit 2)."""
    from poc.config import load_settings
    from poc.speech.factory import build_provider

    env_file = Path(args.env_file) if getattr(args, "env_file", None) else None
    settings = load_settings(env_file=env_file, check_files=False)
    name = canonical_name(args.provider) if args.provider else settings.tts_provider
    try:
        # primary=False: listing needs no voice, so a wrong TTS_VOICE cannot hide the list.
        provider = build_provider(settings, name, primary=False, setting="--provider")
    except AuthRejected as error:
        return _fail(error, 1)
    except ValueError as error:  # ConfigError: unknown provider, bad settings, cannot run here
        return _fail(error, 2)
    except SpeechError as error:
        return _fail(error, 1)
    try:
        voices = provider.list_voices()
    except (SpeechError, InvalidSpeechRequest) as error:
        return _fail(error, 1)
    print(format_json(name, voices) if args.json else format_table(voices))
    return 0


def canonical_name(name: str) -> str:
    key = name.strip().lower()
    return _ALIASES.get(key, key)


def format_table(voices: list[VoiceInfo]) -> str:
    rows = [("ID", "NAME", "LANGUAGE")] + [(v.id, v.name, v.language) for v in voices]
    width_id = max(len(r[0]) for r in rows)
    width_name = max(len(r[1]) for r in rows)
    return "\n".join(
        f"{r[0]:<{width_id}}  {r[1]:<{width_name}}  {r[2]}".rstrip() for r in rows
    )


def format_json(provider: str, voices: list[VoiceInfo]) -> str:
    """{"provider": NAME, "voices": [{"id", "name", "language"}, ...]}"""
    listed = [{"id": v.id, "name": v.name, "language": v.language} for v in voices]
    return json.dumps({"provider": provider, "voices": listed}, ensure_ascii=False, indent=2)


def _fail(error: BaseException, code: int) -> int:
    print(f"poc voices: {' '.join(str(error).split())}", file=sys.stderr)
    return code
