"""TTS settings become a working provider, or fail at start-up naming the setting at fault."""

from __future__ import annotations

from typing import Any

import pytest

from poc.speech.edge import EdgeProvider
from poc.speech.espeak import EspeakProvider
from poc.speech.factory import create_provider
from poc.speech.piper import PiperProvider

from .audio_helpers import rms


@pytest.mark.parametrize(
    ("name", "kind"),
    [("piper", PiperProvider), ("", PiperProvider), (" Espeak ", EspeakProvider),
     ("edge", EdgeProvider)],
)  # fmt: skip
def test_each_name_builds_its_provider_at_the_stream_rate(name: str, kind: type) -> None:
    provider = create_provider(name, 44100, None, None)
    assert isinstance(provider, kind)
    # Unset settings arrive as empty strings: they mean "the default", not "no such voice".
    assert isinstance(create_provider(name, 44100, "", "", ""), kind)
    assert provider.sample_rate == 44100  # type: ignore[attr-defined]


def test_an_unknown_provider_names_the_choices() -> None:
    with pytest.raises(ValueError) as caught:
        create_provider("x", 48000, None, None)
    assert str(caught.value) == "TTS_PROVIDER: unknown provider 'x' (piper, espeak, edge)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("piper", 48000, "amy", None), "TTS_VOICE: unknown voice 'amy' for piper"),
        (("piper", 48000, None, "de"), "TTS_VOICE/TTS_LANGUAGE: language 'de' is not spoken"),
        (("espeak", 48000, "nope", None), "TTS_VOICE/TTS_LANGUAGE: unknown voice 'nope'"),
        (("edge", 48000, "aria", None), "TTS_VOICE: unknown voice 'aria' for edge"),
        (("piper", 48000, None, None, "espeak"), "TTS_FALLBACK: only the edge provider"),
        (("edge", 48000, None, None, "edge"), "TTS_FALLBACK: unknown fallback 'edge'"),
    ],
)
def test_bad_settings_fail_at_start_up_naming_the_setting(
    args: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        create_provider(*args)


def test_espeak_takes_its_voice_from_the_language_alone() -> None:
    provider = create_provider("espeak", 16000, None, "de")
    assert rms(provider.synthesize("Guten Tag.").audio) > 500


def test_edge_with_a_fallback_speaks_whether_or_not_its_service_answers() -> None:
    provider = create_provider("edge", 16000, None, "en", fallback="espeak")
    assert rms(provider.synthesize("Hello there.").audio) > 500
