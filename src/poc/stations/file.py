"""The stations file: many streams in one process, each with its own queue, RTMP URL and face.

```toml
[[station]]
name = "shop"
queue = "shop_input"
rtmp_url = "rtmp://127.0.0.1:1935/live/shop"
avatar = "shop.png"          # relative to this file's folder
```

Each station's Settings are what a single stream would get from the same environment and
`.env`, with the station's keys on top (keys.py says which keys and how values are read), and
the process-wide settings taken from the process's own (`base`). The file is read whole and
checked whole before anything goes on air: a bad key, value, file or a clash between stations
is one ConfigError line naming the stations file, the station and the key.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
import types
from pathlib import Path
from typing import Mapping, Sequence
from urllib.parse import urlsplit

import attrs

from poc import config_values as values
from poc.config import ConfigError, Settings, load_settings, redact_url
from poc.stations.keys import PROCESS_WIDE, StationKeys, field_names, station_keys

NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,40}")
NAME_RULE = "1-40 letters, digits, _ or -"
# The queues poc derives from each main queue (source/connection.py): another station's main
# queue may not be one of them, or two stations would read each other's controls.
_DERIVED_QUEUES = {".control": "control queue", ".dlq": "dead-letter queue"}
_DEFAULT_RTMP_PORTS = {"rtmp": 1935, "rtmps": 443}
_PARSE_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")

# A file a station reads, as (path, SHA-256 of its bytes); (path, None) if it cannot be read.
FileStamp = tuple[str, str | None]


@attrs.frozen
class Station:
    name: str  # [A-Za-z0-9_-]{1,40}; used in URLs (/stations/NAME/), metric labels, log lines
    settings: Settings  # the full settings of this station (environment + the station's keys)
    # what the file set for it, as env names -> values (for "unchanged?" on reload); it may
    # hold a stream key or an API key, hence no repr
    keys: Mapping[str, str] = attrs.field(repr=False)
    # the files it reads (avatars, a piper voice) as they were when the file was read: one
    # replaced under the same name changes the station on reload as a changed setting does
    files: tuple[FileStamp, ...] = ()


def load_stations(
    path: Path,
    base: Settings,
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = None,
    overrides: Mapping[str, str] | None = None,
) -> list[Station]:
    """Every station of the file at `path`, in file order, checked.

    `environ` and `env_file` are what `base` was loaded from (None: os.environ and the usual
    `.env`); `overrides` are the CLI's flags, below each station's keys. Process-wide settings
    are `base`'s in every station. Raises ConfigError (one line, setting STATIONS_FILE).
    """
    tables = _read_tables(path)
    folder = path.absolute().parent
    process_wide = {attr: getattr(base, attr) for attr in field_names(PROCESS_WIDE).values()}
    stations: list[Station] = []
    for position, table in enumerate(tables, 1):
        name = _name(path, table, position)
        for other in stations:
            if other.name == name:
                raise _error(path, f"stations {stations.index(other) + 1} and {position} are both named '{name}'")
        keys = _keys(path, name, table, folder)
        try:
            settings = load_settings(environ, env_file, overrides={**(overrides or {}), **keys.overrides})
        except ConfigError as error:
            raise _error(path, f"station '{name}': {_as_written(str(error), keys.written_as)}") from None
        settings = settings.model_copy(update=process_wide)
        _check_avatars(path, name, settings, keys.written_as)
        keys_set = types.MappingProxyType(dict(keys.overrides))
        stations.append(Station(name, settings, keys_set, files=_stamps(_files_read(settings))))
    _check_queues(path, stations)
    _check_rtmp_urls(path, stations)
    return stations


def log_secrets(stations: Sequence[Station], base: Settings | None = None) -> list[str]:
    """What the log must mask for these stations (and the process's `base` settings): their
    secrets, less the station names. A name is public (its studio's URL, the `station` label
    on the open /metrics), and a stream key equal to it (`live/lobby` for station `lobby`, as
    in the example file) masked would turn every `[lobby] ` of that station's lines into
    `[***] `, leaving a log several stations share unreadable."""
    found = {secret for station in stations for secret in station.settings.secrets()}
    if base is not None:
        found.update(base.secrets())
    return sorted(found - {station.name for station in stations})


def station_queue(path: Path, name: str, base: Settings) -> str:
    """The queue station `name` reads (for `poc send --station`): its `queue`, else `base`'s.

    Only that station's keys are checked (a sender needs no avatar or voice). Raises
    ConfigError for an unknown name (listing the known ones) or a bad station.
    """
    tables = _read_tables(path)
    names = [_name(path, table, position) for position, table in enumerate(tables, 1)]
    if name not in names:
        raise _error(path, f"no station '{name}' (stations: {', '.join(names)})")
    keys = _keys(path, name, tables[names.index(name)], path.absolute().parent)
    queue = keys.overrides.get("RABBITMQ_QUEUE")
    if queue is None:
        return base.rabbitmq_queue
    try:
        return values.queue_name(queue)
    except ValueError as error:
        raise _error(path, f"station '{name}': {keys.written_as['RABBITMQ_QUEUE']}: {error}") from None


def _error(path: Path, message: str) -> ConfigError:
    return ConfigError(f"STATIONS_FILE {path}: {message}", setting="STATIONS_FILE")


def _read_tables(path: Path) -> list[dict[str, object]]:
    """The file's `[[station]]` tables; ConfigError for an unreadable file or another shape."""
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a byte-order mark (Notepad) is not TOML
    except FileNotFoundError:
        raise _error(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise _error(path, f"cannot read: {error}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise _error(path, _parse_error(str(error))) from None
    others = [key for key in document if key != "station"]
    if others:
        raise _error(path, f"unknown top-level key '{others[0]}' (the file holds [[station]] tables)")
    tables = document.get("station")
    if not tables:
        raise _error(path, "no stations (add a [[station]] table for each)")
    if not isinstance(tables, list) or not all(isinstance(table, dict) for table in tables):
        raise _error(path, "'station' must be [[station]] tables, one per station")
    return tables


def _parse_error(message: str) -> str:
    """tomllib's "Invalid value (at line 7, column 5)" → "line 7: Invalid value (column 5)"."""
    position = _PARSE_POSITION.search(message)
    if position is None:
        return message
    return f"line {position[1]}: {message[: position.start()]} (column {position[2]})"


def _name(path: Path, table: Mapping[str, object], position: int) -> str:
    name = table.get("name")
    if name is None:
        raise _error(path, f"station {position}: name: required ({NAME_RULE})")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise _error(path, f"station {position}: name: must be {NAME_RULE} (got {str(name)[:60]!r})")
    return name


def _keys(path: Path, name: str, table: Mapping[str, object], folder: Path) -> StationKeys:
    try:
        return station_keys(table, folder)
    except ValueError as error:
        raise _error(path, f"station '{name}': {error}") from None


def _as_written(message: str, written_as: Mapping[str, str]) -> str:
    """A settings error in the file's words: `RTMP_FPS: ...` → `fps: ...` for a key the station
    wrote (a setting from the environment keeps its env name)."""
    parts = []
    for part in message.split("; "):
        env, colon, rest = part.partition(":")
        parts.append(f"{written_as[env]}:{rest}" if colon and env in written_as else part)
    return "; ".join(parts)


def _check_avatars(path: Path, name: str, settings: Settings, written_as: Mapping[str, str]) -> None:
    """The station's avatar files decode. Only their existence is a settings check: a file that
    exists but does not decode (still being copied, or not a picture) would otherwise fail that
    one station's build, at start-up or on a reload, instead of refusing the file with one
    line naming the station and the key as written."""
    from poc.face.avatar import AvatarError, check_decodes

    chosen = {settings.idle_avatar_path: settings.idle_avatar_setting}
    chosen.setdefault(settings.talking_avatar_path, settings.talking_avatar_setting)
    for avatar, setting in chosen.items():
        try:
            check_decodes(avatar)
        except AvatarError as error:
            message = _as_written(f"{setting}: {error}", written_as)
            raise _error(path, f"station '{name}': {message}") from None


def _files_read(settings: Settings) -> list[Path]:
    """The files a station's build reads whose content may change under the same name: its
    avatars, and its piper voice when TTS_VOICE names a .onnx file (with its .onnx.json)."""
    files = list(dict.fromkeys([settings.idle_avatar_path, settings.talking_avatar_path]))
    voice = (settings.tts_voice or "").strip()
    if voice.endswith(".onnx"):
        files += [Path(voice), Path(voice + ".json")]
    return files


def _stamps(files: list[Path]) -> tuple[FileStamp, ...]:
    """Each file's content digest: a picture replaced under its name changes it, a file only
    copied over itself (a sync that rewrites every file) does not, so that station is left on
    air without a gap."""
    stamps: list[FileStamp] = []
    for file in files:
        try:
            with file.open("rb") as opened:
                digest = hashlib.file_digest(opened, "sha256").hexdigest()
        except OSError:
            digest = None
        stamps.append((str(file), digest))
    return tuple(stamps)


def _check_queues(path: Path, stations: list[Station]) -> None:
    """No two stations read one queue, after defaults (two that leave `queue` unset share the
    environment's) and counting the queues derived from each."""
    claims: dict[str, tuple[str, str]] = {}  # queue → (station, which of its queues)
    for station in stations:
        main = station.settings.rabbitmq_queue
        owned = [(main, "queue")] + [(main + suffix, role) for suffix, role in _DERIVED_QUEUES.items()]
        for queue, role in owned:
            if queue in claims and claims[queue][0] != station.name:
                other, other_role = claims[queue]
                detail = ""
                if other_role != "queue":
                    detail = f" (the {other_role} of '{other}')"
                elif role != "queue":
                    detail = f" (the {role} of '{station.name}')"
                raise _error(path, f"stations '{other}' and '{station.name}' share the queue '{queue}'{detail}")
            claims.setdefault(queue, (station.name, role))


def _check_rtmp_urls(path: Path, stations: list[Station]) -> None:
    """No two stations push to one stream (after defaults; rtmp://h/ and rtmp://h:1935/ are one)."""
    seen: dict[tuple[str, str, int | None, str, str], str] = {}
    for station in stations:
        url = station.settings.rtmp_url
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or _DEFAULT_RTMP_PORTS.get(scheme)
        target = (scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/"), parts.query)
        if target in seen:
            # the URL ends in the stream key, a secret: only its redacted form is shown
            raise _error(path, f"stations '{seen[target]}' and '{station.name}' share the RTMP URL {redact_url(url)}")
        seen[target] = station.name
