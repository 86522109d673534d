"""What one `[[station]]` table may set, turned into the settings text the env parsers read.

A station sets what a single stream sets today, by a short name (`fps`, `queue`, `avatar`...) or
by any setting's env name in lower case (`idle_seed`, `tts_language`...). Values arrive as TOML
strings, numbers and booleans and leave as the text the environment would carry, so a station's
value is checked by the very parser that checks the environment's (config_values). Settings that
exist once per process (the HTTP server, the broker connection, the model runtime, logging) are
refused here: a station that set them could only contradict its neighbours.
"""

from __future__ import annotations

import difflib
import functools
import typing
from pathlib import Path
from typing import Mapping

import attrs

from poc import config_values as values
from poc.config import Settings, env_names

# The short names the issue gives; every other setting goes by its lower-cased env name.
SHORT_NAMES: Mapping[str, str] = {
    "rtmp_url": "RTMP_URL",
    "queue": "RABBITMQ_QUEUE",
    "avatar": "STATIC_VIDEO_PATH",
    "talking_avatar": "TALKING_FACE_AVATAR_IMAGE",
    "tts_provider": "TTS_PROVIDER",
    "tts_voice": "TTS_VOICE",
    "resolution": "RTMP_RESOLUTION",
    "fps": "RTMP_FPS",
    "bitrate": "RTMP_BITRATE",
    "audio_bitrate": "RTMP_AUDIO_BITRATE",
}

# Set once for the whole process: one HTTP server and studio login, one broker connection,
# one model runtime (a MuseTalk load is shared, not repeated per station), one audio server
# for hosted faces, one ffmpeg, one log, and the stations file itself.
PROCESS_WIDE = frozenset(
    {
        "HTTP_HOST", "HTTP_PORT", "STUDIO_TOKEN", "LOG_LEVEL", "STATIONS_FILE",
        "RABBITMQ_HOST", "RABBITMQ_PORT", "RABBITMQ_USER", "RABBITMQ_PASSWORD", "RABBITMQ_VHOST",
        "RABBITMQ_TLS", "RABBITMQ_RECONNECT_SECONDS",
        "TALKING_FACE_MODEL_PATH", "TALKING_FACE_DEVICE", "TALKING_FACE_DTYPE",
        "TALKING_FACE_AUDIO_HOST", "TALKING_FACE_AUDIO_PORT",
        "FFMPEG_PATH",
    }
)  # fmt: skip

# `avatar` is the station's one face, idle and talking (as `run --avatar` is): it clears the
# talking avatars the environment may name unless the station names its own.
_TALKING_AVATARS = ("TALKING_FACE_AVATAR_IMAGE", "TALKING_FACE_AVATAR_VIDEO")


@attrs.frozen
class StationKeys:
    """One station's table as settings: `overrides` for load_settings (env name → text) and,
    for error messages, the key each overridden env name was written as."""

    overrides: Mapping[str, str]
    written_as: Mapping[str, str]


def station_keys(table: Mapping[str, object], folder: Path) -> StationKeys:
    """The table's keys (all but `name`) as settings text; relative paths resolved against
    `folder` (the stations file's). Raises ValueError with a message that starts with the key."""
    overrides: dict[str, str] = {}
    written_as: dict[str, str] = {}
    for key, value in table.items():
        if key == "name":
            continue
        env = _env_name(key)
        if env in written_as:
            raise ValueError(f"'{written_as[env]}' and '{key}' both set {env}")
        text = _as_text(key, value)
        try:
            overrides[env] = _resolved(env, text, folder)
        except ValueError as error:  # a home folder that cannot be found
            raise ValueError(f"{key}: {error}") from None
        written_as[env] = key
    if "avatar" in table:
        for env in _TALKING_AVATARS:
            overrides.setdefault(env, "")
    return StationKeys(overrides, written_as)


def _env_name(key: str) -> str:
    """The env name a station key sets; ValueError for a process-wide or unknown key."""
    env = SHORT_NAMES.get(key) or (key.upper() if key == key.lower() else None)
    if env in PROCESS_WIDE:
        raise ValueError(f"'{key}' is set once for the process, not per station")
    if env is None or env not in _station_settings():
        known = [*SHORT_NAMES, *(name.lower() for name in _station_settings())]
        close = difflib.get_close_matches(key.lower(), known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"unknown key '{key}'{hint}")
    return env


def _as_text(key: str, value: object) -> str:
    """A TOML value as the environment would hold it: true/false, digits, or the text."""
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    kind = "a table" if isinstance(value, dict) else "a list" if isinstance(value, list) else "a date or time"
    raise ValueError(f"{key}: must be text, a number or true/false, not {kind}")


def _resolved(env: str, text: str, folder: Path) -> str:
    """A relative file path → one under the stations file's folder, so a file works from any
    working directory. A TTS_VOICE is a path only when it names a piper .onnx file."""
    is_path = env in _path_settings() or (env == "TTS_VOICE" and text.strip().endswith(".onnx"))
    if not is_path or not text.strip():
        return text
    path = values.expand_home(text.strip())
    return str(path if path.is_absolute() else folder / path)


@functools.cache
def _station_settings() -> frozenset[str]:
    return frozenset(env_names()) - PROCESS_WIDE


@functools.cache
def _path_settings() -> frozenset[str]:
    """Env names of the settings that hold a file or folder path."""
    return frozenset(
        str(field.validation_alias)
        for field in Settings.model_fields.values()
        if field.annotation is Path or Path in typing.get_args(field.annotation)
    )


def field_names(envs: frozenset[str]) -> dict[str, str]:
    """Env name → Settings attribute name, for `envs`."""
    return {
        str(field.validation_alias): attr
        for attr, field in Settings.model_fields.items()
        if str(field.validation_alias) in envs
    }
