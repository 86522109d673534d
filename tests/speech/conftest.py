"""Real providers, loaded once per test session (loading the piper voice takes about a second)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from poc.speech.piper import PiperProvider


@pytest.fixture(scope="session")
def piper_44k() -> Iterator[PiperProvider]:
    provider = PiperProvider(44100)
    provider.warm_up()
    yield provider


@pytest.fixture(scope="session")
def piper_48k() -> Iterator[PiperProvider]:
    provider = PiperProvider(48000)
    provider.warm_up()
    yield provider
