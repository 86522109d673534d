"""Setting values: text in, a typed value out, or a ValueError in poc's own wording.

Each parser takes the text of one setting (from `.env`, the environment or a CLI flag) and says
in a few words what is wrong, so config.py can make one line that names the setting. The names
of the providers and models a setting may take live here too, next to the parsers that check them.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Callable
from urllib.parse import SplitResult, urlsplit

from pydantic import SecretStr

# Concrete speech providers. TTS_PROVIDER takes one of these directly, or the plan's form:
# `local` + TTS_PROVIDER_LOCAL, `api` + TTS_API_PROVIDER.
LOCAL_TTS_PROVIDERS = ("piper", "espeak", "edge", "pyttsx3")
API_TTS_PROVIDERS = ("elevenlabs", "openai", "cartesia", "azure", "google")
TTS_PROVIDERS = LOCAL_TTS_PROVIDERS + API_TTS_PROVIDERS
TTS_ALIASES = {"edge-tts": "edge"}  # the plan's spelling of edge
# TTS_TEXT_FILTER: `markdown` leaves out what a voice would read aloud of text written for the
# eye (Markdown, URLs' paths, emoji; speech/text_filter.py); `none` speaks the text as it comes.
TTS_TEXT_FILTERS = ("markdown", "none")
FACE_APIS = ("d-id", "tavus", "hedra", "synthesia")
BACKUP_FACE_MODELS = ("mimictalk", "synctalk")  # the plan's post-PoC backups: not built


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


def int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"must be a whole number between {low} and {high}") from None
        if not low <= value <= high:
            raise ValueError(f"must be a whole number between {low} and {high}")
        return value

    return parse


# The rates the stream's AAC encoder (ffmpeg's aac) takes from 8 to 96 kHz; at any other rate
# ffmpeg refuses to open it and the stream never goes on air.
AAC_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)


def parse_sample_rate(raw: str) -> int:
    rates = ", ".join(str(rate) for rate in AAC_SAMPLE_RATES)
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(f"must be a whole number of Hz, one of {rates}") from None
    if value not in AAC_SAMPLE_RATES:
        raise ValueError(f"must be a rate the stream's AAC audio takes: one of {rates}")
    return value


def float_between(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"must be a number between {low:g} and {high:g}") from None
        if not low <= value <= high:  # also refuses nan
            raise ValueError(f"must be a number between {low:g} and {high:g}")
        return value

    return parse


def parse_resolution(raw: str) -> tuple[int, int]:
    try:
        w_text, h_text = raw.lower().replace(" ", "").split("x")
        width, height = int(w_text), int(h_text)
    except ValueError:
        raise ValueError("must look like 1280x720") from None
    if width % 2 or height % 2:
        raise ValueError("width and height must be even (H.264 with 4:2:0 chroma)")
    if not (64 <= width <= 3840 and 64 <= height <= 2160):
        raise ValueError("must be between 64x64 and 3840x2160")
    return width, height


def parse_bitrate(raw: str) -> str:
    """`2000k`, `2.5M`, `1500000` → the bitrate as ffmpeg must read it. Written back in ffmpeg's
    own terms rather than passed on as typed: ffmpeg reads a lower-case `m` as milli (`2.5m` is
    0.0025 bit/s) and refuses what only Python's float() reads (`2_000k`)."""
    text = raw.strip().lower()
    number = text[:-1] if text[-1:] in {"k", "m"} else text
    try:
        value = float(number) * {"k": 1e3, "m": 1e6}.get(text[-1:], 1)
    except ValueError:
        raise ValueError("must look like 2000k or 2.5M") from None
    if not 100e3 <= value <= 50e6:
        raise ValueError("must be between 100k and 50M")
    bits = round(value)
    return f"{bits // 1000}k" if bits % 1000 == 0 else str(bits)


def parse_rtmp_url(raw: str) -> str:
    url = raw.strip()
    parts = urlsplit(url)
    if parts.scheme not in {"rtmp", "rtmps"} or not parts.hostname:
        raise ValueError("must be an rtmp:// or rtmps:// URL with a host")
    if not _has_usable_port(parts):  # ffmpeg could never connect: off air for good, retrying
        raise ValueError("its port must be a number from 1 to 65535 (or left out: 1935)")
    if len([p for p in parts.path.split("/") if p]) < 2:
        raise ValueError("must name an application and a stream key: rtmp://host/app/key")
    return url


def _has_usable_port(parts: SplitResult) -> bool:
    """No port (the scheme's default) or one from 1 to 65535. urlsplit raises for a port it
    cannot read only when asked, and the service asks when it redacts the URL for its logs."""
    try:
        return parts.port != 0
    except ValueError:
        return False


def optional_url(*schemes: str) -> Callable[[str], str | None]:
    def parse(raw: str) -> str | None:
        url = raw.strip()
        if not url:
            return None
        try:
            parts = urlsplit(url)
            parts.port  # raises on a port that is not a number
        except ValueError:
            parts = None
        if parts is None or parts.scheme.lower() not in schemes or not parts.hostname:
            raise ValueError(f"must be a {' or '.join(s + '://' for s in schemes)} URL with a host")
        return url

    return parse


def parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return parse


def optional_choice(*choices: str) -> Callable[[str], str | None]:
    choose = parse_choice(*choices)
    return lambda raw: choose(raw) if raw.strip() else None


def tts_name(*choices: str) -> Callable[[str], str]:
    """A provider name as written (edge-tts spelled out); `choices` are the accepted spellings."""
    choose = parse_choice(*choices)
    return lambda raw: TTS_ALIASES.get(choose(raw), choose(raw))


def optional_tts_name(*choices: str) -> Callable[[str], str | None]:
    name = tts_name(*choices)
    return lambda raw: name(raw) if raw.strip() else None


def parse_tts_chain(raw: str) -> tuple[str, ...]:
    """`azure,piper` → ("azure", "piper"): fallbacks in the order they are tried."""
    name = tts_name(*TTS_PROVIDERS, *TTS_ALIASES)
    chain = tuple(name(part) for part in raw.split(",") if part.strip())
    if len(set(chain)) != len(chain):
        raise ValueError("names a provider twice")
    return chain


def parse_face_model(raw: str) -> str:
    value = raw.strip().lower()
    if value in BACKUP_FACE_MODELS:
        raise ValueError(
            f"{value} is not built in poc (one of the plan's post-PoC backups); "
            "docs/backup-models.md says how it would fit; use warp or musetalk"
        )
    return parse_choice("warp", "musetalk")(raw)


def parse_channels(raw: str) -> int:
    if raw.strip() not in {"1", "2"}:
        raise ValueError("must be 1 (mono) or 2 (stereo)")
    return int(raw)


def optional_text(raw: str) -> str | None:
    return raw.strip() or None


def text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def queue_name(raw: str) -> str:
    """An AMQP queue name the broker will declare, with room for the derived `.control`."""
    name = text(raw)
    if name.startswith("amq."):
        raise ValueError("names starting with amq. are reserved by RabbitMQ")
    if len(name.encode("utf-8")) > 255 - len(".control"):
        raise ValueError("must be at most 247 bytes (AMQP names are 255, and .control is added)")
    return name


def optional_region(raw: str) -> str | None:
    """An Azure region name: it becomes part of the endpoint's host name."""
    region = raw.strip().lower()
    if region and not (region.isascii() and region.isalnum()):
        raise ValueError("must be an Azure region name like westeurope (letters and digits)")
    return region or None


def optional_path(raw: str) -> Path | None:
    return expand_home(raw.strip()) if raw.strip() else None


def path(raw: str) -> Path:
    return expand_home(raw.strip())


def expand_home(text: str) -> Path:
    """`~/x` or `~user/x` as a path under that home folder. pathlib raises RuntimeError for a
    home it cannot find (a misspelt user, HOME unset for a user without a passwd entry), which
    no settings check catches: start-up would end in a traceback, a SIGHUP reload would end the
    host. Here it is a ValueError, so the setting is named like any other bad value."""
    path = Path(text)
    try:
        return path.expanduser()
    except RuntimeError:
        raise ValueError(f"cannot find the home folder of {path.parts[0]!r} (no such user, or HOME unset)") from None


def optional_secret(raw: str) -> SecretStr | None:
    return SecretStr(raw.strip()) if raw.strip() else None


def studio_token(raw: str) -> SecretStr | None:
    token = raw.strip()
    if token and len(token) < 16:  # it guards a port reachable from elsewhere: not guessable
        raise ValueError("must be at least 16 characters (e.g. the output of `openssl rand -hex 16`)")
    return SecretStr(token) if token else None


def is_loopback(host: str) -> bool:
    """True for a host that only this machine can reach (localhost, 127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:  # any other name may resolve to a reachable address
        return False
