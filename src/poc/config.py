"""Settings from the environment and an optional `.env` file, validated at start-up.

pydantic-settings reads them and python-dotenv parses the file, so `.env` means what those
libraries make of it: `export KEY=value`, quotes, inline ` # comments` (the plan's own example
file is written that way). Precedence, lowest first: the `.env` file (POC_ENV_FILE names
another), the environment, CLI overrides. Names are the plan's (RABBITMQ_*, RTMP_*, TTS_*,
TALKING_FACE_*, ...); each field's env name is its validation alias.

Values arrive as text; each field's parser turns text into a typed value with poc's own wording,
so a bad value stops start-up with one line that names the setting. Secret values (passwords,
API keys, the RTMP stream key, URLs that may carry credentials) are never echoed back; keys are
SecretStr so a repr or a log of the settings cannot leak them either.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Callable, Mapping
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from poc import config_values as values
from poc import paths
from poc.config_values import (  # noqa: F401  (part of this module's interface)
    API_TTS_PROVIDERS,
    BACKUP_FACE_MODELS,
    FACE_APIS,
    LOCAL_TTS_PROVIDERS,
    TTS_PROVIDERS,
    is_loopback,
)
from poc.errors import StartupError

# Never echoed in an error: they are secrets or URLs that may carry credentials.
_NO_ECHO = frozenset(
    {"RABBITMQ_PASSWORD", "RTMP_URL", "TTS_API_KEY", "TALKING_FACE_API_KEY", "TTS_API_BASE_URL",
     "TALKING_FACE_API_URL", "STUDIO_TOKEN"}
)  # fmt: skip
# The shipped defaults guard nothing and are common words; masking them would garble logs.
_DEFAULT_PASSWORD = "guest"
_DEFAULT_RTMP_URL = "rtmp://127.0.0.1:1935/live/avatar"


class ConfigError(StartupError, ValueError):
    """A setting is wrong; str() is one line naming it."""


def _env(name: str, default: Any, **field: Any) -> Any:
    """A field read from the env name `name` (its validation alias)."""
    return Field(default, validation_alias=name, **field)


def _parsed(parse: Callable[[str], Any]) -> BeforeValidator:
    """Parse text from .env / the environment / the CLI; typed values (defaults) pass as they are."""
    return BeforeValidator(lambda raw: parse(raw) if isinstance(raw, str) else raw)


# --- reading ---------------------------------------------------------------------------------

# The environment load_settings reads (tests pass their own mapping; None means os.environ).
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("poc_config_environ", default=None)


class _EnvironSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of os.environ."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = _ENVIRON.get()
        return dict(os.environ if environ is None else environ)


class Settings(BaseSettings):
    """Every setting, typed and validated; attribute names are poc's, aliases the env names.

    Guarantees once built: each value is within its documented range, the TTS and face choices
    are consistent (keys present for the chosen API providers), and nothing secret shows in
    repr(). Files are checked separately (check_runtime_files) because some callers only need
    the broker settings.
    """

    model_config = SettingsConfigDict(
        case_sensitive=True,  # the plan's names exactly, as the old reader had them
        extra="ignore",  # a .env may hold other programs' settings
        frozen=True,
        enable_decoding=False,  # values are text for our parsers, never JSON
        env_file=None,  # load_settings names the file
    )

    rabbitmq_host: Annotated[str, _parsed(values.text)] = _env("RABBITMQ_HOST", "127.0.0.1")
    rabbitmq_port: Annotated[int, _parsed(values.int_between(1, 65535))] = _env("RABBITMQ_PORT", 5672)
    rabbitmq_user: Annotated[str, _parsed(values.text)] = _env("RABBITMQ_USER", "guest")
    rabbitmq_password: SecretStr = _env("RABBITMQ_PASSWORD", SecretStr(_DEFAULT_PASSWORD))
    rabbitmq_queue: Annotated[str, _parsed(values.queue_name)] = _env("RABBITMQ_QUEUE", "talking_face_input")
    rabbitmq_vhost: Annotated[str, _parsed(values.text)] = _env("RABBITMQ_VHOST", "/")
    rabbitmq_tls: Annotated[bool, _parsed(values.parse_bool)] = _env("RABBITMQ_TLS", False)
    rabbitmq_prefetch: Annotated[int, _parsed(values.int_between(1, 100))] = _env("RABBITMQ_PREFETCH", 4)
    rabbitmq_reconnect_seconds: Annotated[float, _parsed(values.float_between(0.1, 60))] = _env(
        "RABBITMQ_RECONNECT_SECONDS", 1.0
    )
    # The stream key is a credential, but the writer and the studio need the URL as text.
    rtmp_url: Annotated[str, _parsed(values.parse_rtmp_url)] = _env("RTMP_URL", _DEFAULT_RTMP_URL, repr=False)
    resolution: Annotated[tuple[int, int], _parsed(values.parse_resolution)] = _env("RTMP_RESOLUTION", (1280, 720))
    fps: Annotated[int, _parsed(values.int_between(1, 60))] = _env("RTMP_FPS", 30)
    bitrate: Annotated[str, _parsed(values.parse_bitrate)] = _env("RTMP_BITRATE", "2000k")
    audio_bitrate: Annotated[str, _parsed(values.parse_bitrate)] = _env("RTMP_AUDIO_BITRATE", "128k")
    keyframe_seconds: Annotated[float, _parsed(values.float_between(0.5, 10))] = _env("RTMP_KEYFRAME_SECONDS", 2.0)
    static_video_path: Annotated[Path | None, _parsed(values.optional_path)] = _env("STATIC_VIDEO_PATH", None)
    static_video_loop: Annotated[bool, _parsed(values.parse_bool)] = _env("STATIC_VIDEO_LOOP", True)
    transition_seconds: Annotated[float, _parsed(values.float_between(0, 5))] = _env("TRANSITION_SECONDS", 0.3)
    # Life on the avatar (face/life): blinks, breath and drift, the same on every run of a seed.
    idle_blinks: Annotated[bool, _parsed(values.parse_bool)] = _env("IDLE_BLINKS", True)
    idle_motion: Annotated[float, _parsed(values.float_between(0, 3))] = _env("IDLE_MOTION", 1.0)
    idle_seed: Annotated[int, _parsed(values.int_between(0, 2**31 - 1))] = _env("IDLE_SEED", 0)

    # TTS_PROVIDER as written: a provider name, or the plan's `local` / `api` (see tts_provider)
    tts_provider_as_written: Annotated[str, _parsed(values.tts_name("local", "api", *TTS_PROVIDERS, *values.TTS_ALIASES))] = _env(
        "TTS_PROVIDER", "piper"
    )
    tts_provider_local: Annotated[str | None, _parsed(values.optional_tts_name(*LOCAL_TTS_PROVIDERS, *values.TTS_ALIASES))] = _env(
        "TTS_PROVIDER_LOCAL", None
    )
    tts_api_provider: Annotated[str | None, _parsed(values.optional_tts_name(*API_TTS_PROVIDERS))] = _env(
        "TTS_API_PROVIDER", None
    )
    tts_fallback_providers: Annotated[tuple[str, ...], _parsed(values.parse_tts_chain)] = _env("TTS_FALLBACK_PROVIDER", ())
    tts_api_key: Annotated[SecretStr | None, _parsed(values.optional_secret)] = _env("TTS_API_KEY", None)
    tts_voice_as_written: Annotated[str | None, _parsed(values.optional_text)] = _env("TTS_VOICE", None)
    tts_api_voice_id: Annotated[str | None, _parsed(values.optional_text)] = _env("TTS_API_VOICE_ID", None)
    tts_api_base_url: Annotated[str | None, _parsed(values.optional_url("http", "https", "ws", "wss"))] = _env(
        "TTS_API_BASE_URL", None
    )
    azure_speech_region: Annotated[str | None, _parsed(values.optional_region)] = _env("AZURE_SPEECH_REGION", None)
    google_application_credentials: Annotated[Path | None, _parsed(values.optional_path)] = _env(
        "GOOGLE_APPLICATION_CREDENTIALS", None
    )
    tts_model: Annotated[str | None, _parsed(values.optional_text)] = _env("TTS_MODEL", None)
    tts_language: Annotated[str | None, _parsed(values.optional_text)] = _env("TTS_LANGUAGE", None)
    sample_rate: Annotated[int, _parsed(values.parse_sample_rate)] = _env("TTS_SAMPLE_RATE", 44100)
    tts_channels: Annotated[int, _parsed(values.parse_channels)] = _env("TTS_CHANNELS", 1)
    tts_retries: Annotated[int, _parsed(values.int_between(0, 10))] = _env("TTS_RETRIES", 2)
    tts_timeout_seconds: Annotated[float, _parsed(values.float_between(0.5, 120))] = _env("TTS_TIMEOUT_SECONDS", 10.0)
    tts_text_filter: Annotated[str, _parsed(values.parse_choice(*values.TTS_TEXT_FILTERS))] = _env(
        "TTS_TEXT_FILTER", "markdown"
    )

    talking_face_provider: Annotated[str, _parsed(values.parse_choice("local", "api"))] = _env(
        "TALKING_FACE_PROVIDER", "local"
    )
    talking_face_api: Annotated[str | None, _parsed(values.optional_choice(*FACE_APIS))] = _env("TALKING_FACE_API", None)
    talking_face_api_url: Annotated[str | None, _parsed(values.optional_url("http", "https"))] = _env(
        "TALKING_FACE_API_URL", None
    )
    talking_face_api_key: Annotated[SecretStr | None, _parsed(values.optional_secret)] = _env("TALKING_FACE_API_KEY", None)
    talking_face_avatar_id: Annotated[str | None, _parsed(values.optional_text)] = _env("TALKING_FACE_AVATAR_ID", None)
    talking_face_api_timeout_seconds: Annotated[float, _parsed(values.float_between(1, 1800))] = _env(
        "TALKING_FACE_API_TIMEOUT_SECONDS", 120.0
    )
    # Tavus fetches audio by URL: poc serves each message's WAV on this port under this public URL.
    talking_face_audio_public_url: Annotated[str | None, _parsed(values.optional_url("http", "https"))] = _env(
        "TALKING_FACE_AUDIO_PUBLIC_URL", None
    )
    talking_face_audio_host: Annotated[str, _parsed(values.text)] = _env("TALKING_FACE_AUDIO_HOST", "0.0.0.0")
    talking_face_audio_port: Annotated[int, _parsed(values.int_between(1, 65535))] = _env("TALKING_FACE_AUDIO_PORT", 8089)
    talking_face_model: Annotated[str, _parsed(values.parse_face_model)] = _env("TALKING_FACE_MODEL", "warp")
    model_path: Annotated[Path, _parsed(values.path)] = _env("TALKING_FACE_MODEL_PATH", paths.DEFAULT_MODELS_DIR)
    device: Annotated[str, _parsed(values.parse_choice("auto", "cpu", "cuda"))] = _env("TALKING_FACE_DEVICE", "auto")
    dtype: Annotated[str, _parsed(values.parse_choice("auto", "float16", "bfloat16", "float32"))] = _env(
        "TALKING_FACE_DTYPE", "auto"
    )
    avatar_image: Annotated[Path | None, _parsed(values.optional_path)] = _env("TALKING_FACE_AVATAR_IMAGE", None)
    avatar_video: Annotated[Path | None, _parsed(values.optional_path)] = _env("TALKING_FACE_AVATAR_VIDEO", None)
    batch_size: Annotated[int, _parsed(values.int_between(1, 256))] = _env("TALKING_FACE_BATCH_SIZE", 16)

    ffmpeg_path: Annotated[str | None, _parsed(values.optional_text)] = _env("FFMPEG_PATH", None)
    max_text_chars: Annotated[int, _parsed(values.int_between(1, 100_000))] = _env("MAX_TEXT_CHARS", 2000)
    max_audio_seconds: Annotated[float, _parsed(values.float_between(0.1, 3600))] = _env("MAX_AUDIO_SECONDS", 60.0)
    max_body_bytes: Annotated[int, _parsed(values.int_between(1024, 100_000_000))] = _env("MAX_BODY_BYTES", 5_000_000)
    speech_ahead_seconds: Annotated[float, _parsed(values.float_between(1, 600))] = _env("SPEECH_AHEAD_SECONDS", 30.0)
    shutdown_deadline_seconds: Annotated[float, _parsed(values.float_between(0, 30))] = _env("SHUTDOWN_DEADLINE_SECONDS", 2.0)
    http_host: Annotated[str, _parsed(values.text)] = _env("HTTP_HOST", "127.0.0.1")
    http_port: Annotated[int, _parsed(values.int_between(0, 65535))] = _env("HTTP_PORT", 8080)
    studio_hls_url: Annotated[str | None, _parsed(values.optional_text)] = _env("STUDIO_HLS_URL", None)
    studio_token: Annotated[SecretStr | None, _parsed(values.studio_token)] = _env("STUDIO_TOKEN", None)
    log_level: Annotated[str, _parsed(values.parse_choice("debug", "info", "warning", "error"))] = _env("LOG_LEVEL", "info")
    # Many streams in one process (poc.stations); empty: the one stream these settings describe.
    stations_file: Annotated[Path | None, _parsed(values.optional_path)] = _env("STATIONS_FILE", None)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: CLI overrides (passed as init values), then the environment, then .env.
        return init_settings, _EnvironSource(settings_cls), dotenv_settings

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        """Checks across settings; each message names the settings involved."""
        if self.tts_provider_as_written == "api" and self.tts_api_provider is None:
            choices = ", ".join(API_TTS_PROVIDERS)
            raise ValueError(f"TTS_API_PROVIDER: required when TTS_PROVIDER=api (one of {choices})")
        primary = self.tts_provider
        if primary in self.tts_fallback_providers:
            raise ValueError(f"TTS_FALLBACK_PROVIDER: names the primary provider {primary} (TTS_PROVIDER)")
        for name in (primary, *self.tts_fallback_providers):
            where = "TTS_FALLBACK_PROVIDER" if name != primary else _provider_setting(self)
            missing = _missing_credentials(self, name)
            if missing:
                raise ValueError(f"{missing}: required for the {name} voice ({where})")
        if self.talking_face_provider == "api":
            if self.talking_face_api is None:
                raise ValueError(
                    f"TALKING_FACE_API: required when TALKING_FACE_PROVIDER=api (one of {', '.join(FACE_APIS)})"
                )
            if self.talking_face_api_key is None:
                raise ValueError(f"TALKING_FACE_API_KEY: required for the {self.talking_face_api} face API")
            if self.talking_face_api == "tavus" and self.talking_face_audio_public_url is None:
                raise ValueError(
                    "TALKING_FACE_AUDIO_PUBLIC_URL: required for tavus, which fetches each message's audio "
                    "by URL (the public address of TALKING_FACE_AUDIO_PORT)"
                )
        if self.http_port and self.studio_token is None and not is_loopback(self.http_host):
            raise ValueError(
                f"STUDIO_TOKEN: required when HTTP_HOST ({self.http_host}) is not a loopback address: whoever "
                "reaches the studio could speak on air (set a token of 16+ characters, or HTTP_HOST=127.0.0.1)"
            )
        return self

    @property
    def tts_provider(self) -> str:
        """The concrete speech provider: piper, espeak, edge, pyttsx3 or an API vendor's name."""
        if self.tts_provider_as_written == "local":
            return self.tts_provider_local or "piper"  # poc's offline default voice
        if self.tts_provider_as_written == "api":
            assert self.tts_api_provider is not None  # _consistent refused api without it
            return self.tts_api_provider
        return self.tts_provider_as_written

    @property
    def tts_voice(self) -> str | None:
        """The default voice: TTS_API_VOICE_ID for an API provider when set, else TTS_VOICE."""
        if self.tts_provider in API_TTS_PROVIDERS and self.tts_api_voice_id:
            return self.tts_api_voice_id
        return self.tts_voice_as_written

    @property
    def width(self) -> int:
        return self.resolution[0]

    @property
    def height(self) -> int:
        return self.resolution[1]

    @property
    def talking_avatar_path(self) -> Path:
        """What the face is drawn on: the video, else the image, else the idle one, else the default."""
        return self.avatar_video or self.avatar_image or self.static_video_path or paths.DEFAULT_AVATAR

    @property
    def idle_avatar_path(self) -> Path:
        """What plays between messages: STATIC_VIDEO_PATH, else the talking avatar."""
        return self.static_video_path or self.talking_avatar_path

    @property
    def talking_avatar_setting(self) -> str:
        """The env name that chose talking_avatar_path (for errors about that file)."""
        if self.avatar_video:
            return "TALKING_FACE_AVATAR_VIDEO"
        return "TALKING_FACE_AVATAR_IMAGE" if self.avatar_image else "STATIC_VIDEO_PATH"

    @property
    def idle_avatar_setting(self) -> str:
        """The env name that chose idle_avatar_path (for errors about that file)."""
        return "STATIC_VIDEO_PATH" if self.static_video_path else self.talking_avatar_setting

    @property
    def avatars_differ(self) -> bool:
        """True when idle and talking are different files (the switch then cross-fades)."""
        return self.idle_avatar_path.resolve() != self.talking_avatar_path.resolve()

    @property
    def avatar_path(self) -> Path:
        """The talking avatar (kept for callers written when idle and talking had to be one file)."""
        return self.talking_avatar_path

    def secrets(self) -> list[str]:
        """Values that must never reach a log line, a metric or an error header."""
        found = [self.rabbitmq_password.get_secret_value()]
        keys = (self.tts_api_key, self.talking_face_api_key, self.studio_token)
        found += [k.get_secret_value() for k in keys if k is not None]
        found.append(stream_key(self.rtmp_url))
        for url in (self.rtmp_url, self.tts_api_base_url, self.talking_face_api_url):
            if url:
                found.append(urlsplit(url).password or "")
        defaults = {_DEFAULT_PASSWORD, stream_key(_DEFAULT_RTMP_URL)}
        # Under 3 characters a mask would hit ordinary words; such a value protects nothing anyway.
        return [s for s in found if len(s) >= 3 and s not in defaults]


def _provider_setting(settings: Settings) -> str:
    """Which setting chose the primary provider, for error messages."""
    chosen_by = {"local": "TTS_PROVIDER_LOCAL", "api": "TTS_API_PROVIDER"}
    return chosen_by.get(settings.tts_provider_as_written, "TTS_PROVIDER")


def _missing_credentials(settings: Settings, provider: str) -> str | None:
    """The setting(s) a provider needs but lacks, as its error should name them; None if complete."""
    key = settings.tts_api_key is not None
    if provider in ("elevenlabs", "openai", "cartesia"):
        return None if key else "TTS_API_KEY"
    if provider == "google":  # an API key or a service account
        if key or settings.google_application_credentials:
            return None
        return "TTS_API_KEY or GOOGLE_APPLICATION_CREDENTIALS"
    if provider == "azure":  # a key and where to send it
        if not key:
            return "TTS_API_KEY"
        if settings.azure_speech_region or settings.tts_api_base_url:
            return None
        return "AZURE_SPEECH_REGION or TTS_API_BASE_URL"
    return None


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


def env_names() -> list[str]:
    """Every setting's env name, in declaration order (for docs and their tests)."""
    return [str(field.validation_alias) for field in Settings.model_fields.values()]


def load_settings(
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = None,
    overrides: Mapping[str, str] | None = None,
    check_files: bool = True,
) -> Settings:
    """Build Settings from .env (lowest), then the environment, then CLI overrides (highest).

    `environ` replaces os.environ (tests); `overrides` are keyed by env name. A missing env file
    is no error (the file is optional). With check_files, the files the service needs (avatars,
    ffmpeg, model folder, Google credentials) are checked too. Raises ConfigError (one line).
    """
    environ = os.environ if environ is None else environ
    if env_file is None:
        env_file = Path(environ.get("POC_ENV_FILE", ".env"))
    if env_file.is_file():
        _check_env_file(env_file)
    token = _ENVIRON.set(environ)
    try:
        settings = Settings(_env_file=env_file if env_file.is_file() else None, **dict(overrides or {}))
    except ValidationError as error:
        raise _one_line(error) from None
    finally:
        _ENVIRON.reset(token)
    if check_files:
        check_runtime_files(settings)
    return settings


def _check_env_file(path: Path) -> None:
    """python-dotenv skips a line it cannot parse (with a warning); for a service's settings a
    skipped line is a silent misconfiguration, so it stops start-up instead."""
    from dotenv.parser import parse_stream

    try:
        with path.open(encoding="utf-8") as stream:
            for binding in parse_stream(stream):
                if binding.error:
                    raise ConfigError(f"{path}:{binding.original.line}: cannot parse this line (expected KEY=VALUE)")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from None


def _one_line(error: ValidationError) -> ConfigError:
    """pydantic's report → one line per poc's rules: `SETTING: what is wrong (got 'value')`."""
    parts = []
    for item in error.errors(include_url=False):
        cause = (item.get("ctx") or {}).get("error")
        message = str(cause) if cause is not None else item["msg"]
        if not item["loc"]:  # a check across settings: its message names them
            parts.append(message)
            continue
        name = str(item["loc"][0])
        value = item.get("input")
        shown = f" (got {value[:80]!r})" if isinstance(value, str) and name not in _NO_ECHO else ""
        parts.append(f"{name}: {message}{shown}")
    return ConfigError("; ".join(parts).replace("\n", " "))


def check_runtime_files(settings: Settings) -> None:
    """The files the service needs exist (and the Google credentials are a service account)."""
    for name, value in (
        ("TALKING_FACE_AVATAR_VIDEO", settings.avatar_video),
        ("TALKING_FACE_AVATAR_IMAGE", settings.avatar_image),
        ("STATIC_VIDEO_PATH", settings.static_video_path),
    ):
        if value is not None and not value.is_file():
            raise ConfigError(f"{name}: file not found: {value}")
    if settings.stations_file is not None and not settings.stations_file.is_file():
        raise ConfigError(f"STATIONS_FILE: file not found: {settings.stations_file}")
    find_ffmpeg(settings.ffmpeg_path)
    if settings.talking_face_model == "musetalk" and not settings.model_path.is_dir():
        raise ConfigError(
            f"TALKING_FACE_MODEL_PATH: folder not found: {settings.model_path} "
            "(run `python -m poc models fetch` or place the MuseTalk weights there)"
        )
    google = "google" in (settings.tts_provider, *settings.tts_fallback_providers)
    if google and settings.google_application_credentials is not None:
        _check_service_account(settings.google_application_credentials)


def _check_service_account(path: Path) -> None:
    # The file holds a private key: say what is wrong with it, never what is in it.
    name = "GOOGLE_APPLICATION_CREDENTIALS"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{name}: file not found: {path}") from None
    except (OSError, UnicodeDecodeError, ValueError):
        raise ConfigError(f"{name}: {path} is not a readable JSON file") from None
    kind = data.get("type") if isinstance(data, dict) else None
    if kind != "service_account":
        raise ConfigError(f"{name}: {path} is not a service-account key (its type is {kind!r})")


@functools.lru_cache(maxsize=8)
def _is_ffmpeg(path: str) -> bool:
    """Whether `path -version` answers as ffmpeg does (another program would fail on air,
    restarting forever; asked once per path: start-up looks it up twice)."""
    try:
        result = subprocess.run([path, "-version"], capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0 and result.stdout.startswith(b"ffmpeg version")


def find_ffmpeg(configured: str | None) -> str:
    """FFMPEG_PATH, then ffmpeg on PATH, then the binary imageio-ffmpeg ships."""
    if configured:
        found = shutil.which(configured)
        if not found:
            raise ConfigError(f"FFMPEG_PATH: no executable ffmpeg at {configured!r}")
        if not _is_ffmpeg(found):
            raise ConfigError(f"FFMPEG_PATH: {configured!r} is not ffmpeg (`-version` does not say ffmpeg)")
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
