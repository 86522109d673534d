"""Settings from the environment and an optional `.env` file, validated at start-up.

Names are the plan's (RABBITMQ_*, RTMP_*, TTS_*, TALKING_FACE_*, ...) so existing deployments
keep working. A bad value stops start-up with one line that names the setting; secret values
(passwords, the RTMP stream key) are never echoed back.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import attrs

from poc import paths


class ConfigError(ValueError):
    """A setting is wrong; str() is one line naming it."""


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"must be a whole number between {low} and {high}") from None
        if not low <= value <= high:
            raise ValueError(f"must be a whole number between {low} and {high}")
        return value

    return parse


def _float_between(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"must be a number between {low:g} and {high:g}") from None
        if not low <= value <= high:
            raise ValueError(f"must be a number between {low:g} and {high:g}")
        return value

    return parse


def _parse_resolution(raw: str) -> tuple[int, int]:
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


def _parse_bitrate(raw: str) -> str:
    text = raw.strip().lower()
    number = text[:-1] if text[-1:] in {"k", "m"} else text
    try:
        value = float(number) * {"k": 1e3, "m": 1e6}.get(text[-1:], 1)
    except ValueError:
        raise ValueError("must look like 2000k or 2.5M") from None
    if not 100e3 <= value <= 50e6:
        raise ValueError("must be between 100k and 50M")
    return text


def _parse_rtmp_url(raw: str) -> str:
    url = raw.strip()
    parts = urlsplit(url)
    if parts.scheme not in {"rtmp", "rtmps"} or not parts.hostname:
        raise ValueError("must be an rtmp:// or rtmps:// URL with a host")
    if len([p for p in parts.path.split("/") if p]) < 2:
        raise ValueError("must name an application and a stream key: rtmp://host/app/key")
    return url


def _parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return parse


def _parse_optional_text(raw: str) -> str | None:
    return raw.strip() or None


def _parse_text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _parse_optional_path(raw: str) -> Path | None:
    return Path(raw.strip()).expanduser() if raw.strip() else None


def _parse_path(raw: str) -> Path:
    return Path(raw.strip()).expanduser()


# env name -> (attribute, parser, default as the env text, secret?)
_FIELDS: dict[str, tuple[str, Callable[[str], Any], str, bool]] = {
    "RABBITMQ_HOST": ("rabbitmq_host", _parse_text, "127.0.0.1", False),
    "RABBITMQ_PORT": ("rabbitmq_port", _int_between(1, 65535), "5672", False),
    "RABBITMQ_USER": ("rabbitmq_user", _parse_text, "guest", False),
    "RABBITMQ_PASSWORD": ("rabbitmq_password", str, "guest", True),
    "RABBITMQ_QUEUE": ("rabbitmq_queue", _parse_text, "talking_face_input", False),
    "RABBITMQ_VHOST": ("rabbitmq_vhost", _parse_text, "/", False),
    "RABBITMQ_TLS": ("rabbitmq_tls", _parse_bool, "false", False),
    "RABBITMQ_PREFETCH": ("rabbitmq_prefetch", _int_between(1, 100), "4", False),
    "RABBITMQ_RECONNECT_SECONDS": ("rabbitmq_reconnect_seconds", _float_between(0.1, 60), "1", False),
    "RTMP_URL": ("rtmp_url", _parse_rtmp_url, "rtmp://127.0.0.1:1935/live/avatar", True),
    "RTMP_RESOLUTION": ("resolution", _parse_resolution, "1280x720", False),
    "RTMP_FPS": ("fps", _int_between(1, 60), "30", False),
    "RTMP_BITRATE": ("bitrate", _parse_bitrate, "2000k", False),
    "RTMP_AUDIO_BITRATE": ("audio_bitrate", _parse_bitrate, "128k", False),
    "RTMP_KEYFRAME_SECONDS": ("keyframe_seconds", _float_between(0.5, 10), "2", False),
    "STATIC_VIDEO_PATH": ("static_video_path", _parse_optional_path, "", False),
    "STATIC_VIDEO_LOOP": ("static_video_loop", _parse_bool, "true", False),
    "TTS_PROVIDER": ("tts_provider", _parse_choice("piper", "espeak", "edge"), "piper", False),
    "TTS_FALLBACK_PROVIDER": ("tts_fallback_provider", _parse_optional_text, "", False),
    "TTS_VOICE": ("tts_voice", _parse_optional_text, "", False),
    "TTS_LANGUAGE": ("tts_language", _parse_optional_text, "", False),
    "TTS_SAMPLE_RATE": ("sample_rate", _int_between(8000, 96000), "44100", False),
    "TTS_RETRIES": ("tts_retries", _int_between(0, 10), "2", False),
    "TALKING_FACE_PROVIDER": ("talking_face_provider", _parse_choice("local"), "local", False),
    "TALKING_FACE_MODEL": ("talking_face_model", _parse_choice("warp", "musetalk"), "warp", False),
    "TALKING_FACE_MODEL_PATH": ("model_path", _parse_path, str(paths.DEFAULT_MODELS_DIR), False),
    "TALKING_FACE_DEVICE": ("device", _parse_choice("auto", "cpu", "cuda"), "auto", False),
    "TALKING_FACE_DTYPE": ("dtype", _parse_choice("auto", "float16", "bfloat16", "float32"), "auto", False),
    "TALKING_FACE_AVATAR_IMAGE": ("avatar_image", _parse_optional_path, "", False),
    "TALKING_FACE_AVATAR_VIDEO": ("avatar_video", _parse_optional_path, "", False),
    "TALKING_FACE_BATCH_SIZE": ("batch_size", _int_between(1, 256), "16", False),
    "FFMPEG_PATH": ("ffmpeg_path", _parse_optional_text, "", False),
    "MAX_TEXT_CHARS": ("max_text_chars", _int_between(1, 100_000), "2000", False),
    "MAX_AUDIO_SECONDS": ("max_audio_seconds", _float_between(0.1, 3600), "60", False),
    "MAX_BODY_BYTES": ("max_body_bytes", _int_between(1024, 100_000_000), "5000000", False),
    "SPEECH_AHEAD_SECONDS": ("speech_ahead_seconds", _float_between(1, 600), "30", False),
    "SHUTDOWN_DEADLINE_SECONDS": ("shutdown_deadline_seconds", _float_between(0, 30), "2", False),
    "HTTP_HOST": ("http_host", _parse_text, "127.0.0.1", False),
    "HTTP_PORT": ("http_port", _int_between(0, 65535), "8080", False),
    "STUDIO_HLS_URL": ("studio_hls_url", _parse_optional_text, "", False),
    "LOG_LEVEL": ("log_level", _parse_choice("debug", "info", "warning", "error"), "info", False),
}


@attrs.frozen
class Settings:
    rabbitmq_host: str
    rabbitmq_port: int
    rabbitmq_user: str
    rabbitmq_password: str = attrs.field(repr=False)
    rabbitmq_queue: str
    rabbitmq_vhost: str
    rabbitmq_tls: bool
    rabbitmq_prefetch: int
    rabbitmq_reconnect_seconds: float
    rtmp_url: str = attrs.field(repr=False)
    resolution: tuple[int, int]
    fps: int
    bitrate: str
    audio_bitrate: str
    keyframe_seconds: float
    static_video_path: Path | None
    static_video_loop: bool
    tts_provider: str
    tts_fallback_provider: str | None
    tts_voice: str | None
    tts_language: str | None
    sample_rate: int
    tts_retries: int
    talking_face_provider: str
    talking_face_model: str
    model_path: Path
    device: str
    dtype: str
    avatar_image: Path | None
    avatar_video: Path | None
    batch_size: int
    ffmpeg_path: str | None
    max_text_chars: int
    max_audio_seconds: float
    max_body_bytes: int
    speech_ahead_seconds: float
    shutdown_deadline_seconds: float
    http_host: str
    http_port: int
    studio_hls_url: str | None
    log_level: str

    @property
    def width(self) -> int:
        return self.resolution[0]

    @property
    def height(self) -> int:
        return self.resolution[1]

    @property
    def avatar_path(self) -> Path:
        """The one avatar that idle and talking share (so the body never jumps)."""
        return self.avatar_video or self.avatar_image or self.static_video_path or paths.DEFAULT_AVATAR

    def secrets(self) -> list[str]:
        """Values that must never reach a log line or a metric."""
        found = [self.rabbitmq_password] if self.rabbitmq_password else []
        key = stream_key(self.rtmp_url)
        if key:
            found.append(key)
        userinfo = urlsplit(self.rtmp_url).password
        if userinfo:
            found.append(userinfo)
        # The shipped defaults (guest, the demo key) guard nothing and are common words; masking
        # them would garble ordinary log lines.
        defaults = {_FIELDS["RABBITMQ_PASSWORD"][2], stream_key(_FIELDS["RTMP_URL"][2])}
        return [s for s in found if len(s) >= 3 and s not in defaults]


def stream_key(url: str) -> str:
    """The last path element of an RTMP URL: the stream key, which is a credential."""
    path = urlsplit(url).path
    return path.rstrip("/").rsplit("/", 1)[-1] if path.strip("/") else ""


def redact_url(url: str) -> str:
    """rtmp://user:pw@host/app/key?x → rtmp://***@host/app/*** (safe to print)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    if parts.username or parts.password:
        host = f"***@{host}"
    app = parts.path.rstrip("/").rsplit("/", 1)[0]
    return f"{parts.scheme}://{host}{app}/***"


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; '#' comments, optional 'export ', optional quotes."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("export "):
            text = text[7:].lstrip()
        if "=" not in text:
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE")
        key, value = text.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def load_settings(
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = None,
    overrides: Mapping[str, str] | None = None,
    check_files: bool = True,
) -> Settings:
    """Build Settings from .env (lowest), then the environment, then CLI overrides (highest).

    With check_files, files the service needs (avatar, ffmpeg, model folder) are checked too.
    """
    environ = os.environ if environ is None else environ
    if env_file is None:
        env_file = Path(environ.get("POC_ENV_FILE", ".env"))
    merged: dict[str, str] = {}
    if env_file.is_file():
        merged.update(read_env_file(env_file))
    merged.update({k: v for k, v in environ.items() if k in _FIELDS})
    merged.update(overrides or {})
    values: dict[str, Any] = {}
    for name, (attribute, parse, default, secret) in _FIELDS.items():
        raw = merged.get(name, default)
        try:
            values[attribute] = parse(raw)
        except ValueError as error:
            shown = "" if secret else f" (got {raw!r})"
            raise ConfigError(f"{name}: {error}{shown}") from None
    settings = Settings(**values)
    if check_files:
        check_runtime_files(settings)
    return settings


def check_runtime_files(settings: Settings) -> None:
    given = {
        name: value
        for name, value in (
            ("TALKING_FACE_AVATAR_VIDEO", settings.avatar_video),
            ("TALKING_FACE_AVATAR_IMAGE", settings.avatar_image),
            ("STATIC_VIDEO_PATH", settings.static_video_path),
        )
        if value is not None
    }
    if len({p.resolve() for p in given.values()}) > 1:
        raise ConfigError(
            f"{' and '.join(given)} name different files: idle and talking must share one "
            "avatar so the body never jumps; set only one"
        )
    for name, value in given.items():
        if not value.is_file():
            raise ConfigError(f"{name}: file not found: {value}")
    find_ffmpeg(settings.ffmpeg_path)
    if settings.talking_face_model == "musetalk" and not settings.model_path.is_dir():
        raise ConfigError(
            f"TALKING_FACE_MODEL_PATH: folder not found: {settings.model_path} "
            "(run `python -m poc models fetch` or place the MuseTalk weights there)"
        )


def find_ffmpeg(configured: str | None) -> str:
    """FFMPEG_PATH, then ffmpeg on PATH, then the binary imageio-ffmpeg ships."""
    if configured:
        found = shutil.which(configured)
        if not found:
            raise ConfigError(f"FFMPEG_PATH: no executable ffmpeg at {configured!r}")
        return found
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # the package raises a bare RuntimeError when its binary is absent
        raise ConfigError(
            "FFMPEG_PATH: no ffmpeg found (not set, not on PATH, imageio-ffmpeg has none); "
            "install ffmpeg or set FFMPEG_PATH"
        ) from None
