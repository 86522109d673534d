"""Start-up errors: a setting poc cannot run with, said in one line that names it.

Every error that should stop start-up rather than be survived on air derives from StartupError:
a bad setting (config.ConfigError), an avatar that cannot be read (face.avatar.AvatarError), an
engine that cannot run (face.base.EngineError), a voice that cannot be set up (raised as
ConfigError by speech.factory). The CLI catches StartupError once, prints `line()` and exits 2,
whichever thread or task group it was raised in (task groups wrap it: `find_startup_error`).
"""

from __future__ import annotations

import re

# An env name at the start of a message ("TTS_VOICE: ...", "TTS_VOICE/TTS_LANGUAGE: ...",
# "TTS_API_KEY or GOOGLE_APPLICATION_CREDENTIALS: ..."): the message already names its setting.
_NAMED = re.compile(r"^[A-Z][A-Z0-9_]*[A-Z0-9]\b")


class StartupError(Exception):
    """poc cannot start with these settings. str() is the message; `setting` is the env name
    at fault when the raiser knows it (a caller that knows better may fill it in later)."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting

    def with_setting(self, setting: str) -> "StartupError":
        """Name the setting unless the raiser already did; returns self (for `raise e.with_setting(...)`)."""
        if self.setting is None:
            self.setting = setting
        return self

    def line(self) -> str:
        """One line naming the setting: `SETTING: message` (the name once, even when the
        message starts with it)."""
        message = " ".join(str(self).split())  # a vendor's or a library's text may span lines
        if self.setting and not _NAMED.match(message):
            return f"{self.setting}: {message}"
        return message


def describe_error(error: BaseException) -> str:
    """An error in one line for a log or a dead-letter reason: a StartupError's `line()`, else
    'KeyError: 3', or the type alone ('MemoryError') when the message is empty."""
    if isinstance(error, StartupError):
        return error.line()
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def find_startup_error(error: BaseException) -> StartupError | None:
    """The StartupError `error` is or carries (task groups wrap what their tasks raise in
    exception groups, nested as deep as the task groups were); None when there is none."""
    if isinstance(error, StartupError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = find_startup_error(inner)
            if found is not None:
                return found
    return None

