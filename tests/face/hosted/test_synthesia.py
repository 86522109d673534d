"""What only Synthesia's client does: speech uploaded as MP3 to the Upload API, a stock avatar by
id, and the language Synthesia must be told with uploaded speech (the shared flow is in
test_clients.py, run for every vendor)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from poc.face.hosted import HostedFaceError, create_client
from poc.face.hosted.synthesia import script_language
from poc.simulators.faces import wav_samples
from poc.simulators.synthesia import SynthesiaServer

from .conftest import POLL, RATE, speech

AVATAR = "anna_costume1_cameraA"


@pytest.fixture
def sim():
    server = SynthesiaServer(polls_to_finish=2).start()
    yield server
    server.stop()


def render(sim: SynthesiaServer, audio: np.ndarray, rate: int = RATE, language: str | None = None) -> None:
    client = create_client("synthesia", sim.api_url, sim.api_key, AVATAR, poll_interval=POLL, language=language)
    try:
        client.render(audio, rate, deadline=time.monotonic() + 30).unlink()
    finally:
        client.close()


def test_the_speech_goes_up_as_mp3_and_the_video_is_asked_of_the_avatar_with_it(sim) -> None:
    render(sim, speech(0.6), language="de_de")
    upload, create = [r for r in sim.requests if r.method == "POST"]
    assert upload.path == "/v2/scriptAudio"
    assert upload.headers["content-type"] == "audio/mpeg" and upload.body[:2] in (b"\xff\xfb", b"ID")
    assert upload.headers["authorization"] == sim.api_key  # the key itself, no scheme
    [clip] = create.json()["input"]
    assert clip["avatar"] == AVATAR and clip["background"]
    assert clip["scriptAudio"] in sim.script_audio and clip["scriptLanguage"] == "de-DE"
    assert "scriptText" not in clip  # our voice, not Synthesia's


def test_a_stream_rate_an_mp3_cannot_carry_is_resampled_not_refused(sim) -> None:
    audio = speech(0.5)
    render(sim, np.repeat(audio, 2)[: len(audio) * 2], rate=88200)
    received, rate = wav_samples(next(iter(sim.script_audio.values())))
    assert rate == 48000 and abs(len(received) - 0.5 * 48000) <= 1


@pytest.mark.parametrize(
    ("written", "told"),
    [(None, "en-US"), ("", "en-US"), ("en_us", "en-US"), ("fr-ca", "fr-CA"), ("de", "de"), ("en-001", "en-001")],
)
def test_tts_language_is_told_as_synthesia_writes_it(written: str | None, told: str) -> None:
    assert script_language(written) == told


def test_a_create_call_synthesia_refuses_is_failed_with_its_words(sim) -> None:
    """A 400 (an unknown avatar or language, say) is "failed": the local engine speaks."""
    sim.faults.extend([None, 400])  # the upload passes, the create call is refused
    with pytest.raises(HostedFaceError) as caught:
        render(sim, speech(0.3))
    assert caught.value.kind == "failed" and "HTTP 400" in str(caught.value)
    assert "simulated HTTP 400" in str(caught.value)  # Synthesia's own {error} is kept
