"""Each hosted-face vendor's simulator with a real client pointed at it, and speech to send.

`vendor` runs a test once per vendor. `Vendor` knows, per vendor, where the key travels and how
to read back the audio the simulator received, so the tests themselves read the same for all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import numpy as np
import pytest

from poc.face.hosted import HostedFaceClient, create_client
from poc.face.hosted.audio_host import AudioHost
from poc.paths import DEFAULT_AVATAR
from poc.simulators.base import Recorded
from poc.simulators.did import DIdServer
from poc.simulators.faces import FaceVendorServer, multipart_files
from poc.simulators.hedra import HedraServer
from poc.simulators.synthesia import SynthesiaServer
from poc.simulators.tavus import TavusServer

RATE = 44100
POLL = 0.02  # seconds between polls: fast tests, same code path


@attrs.define
class Vendor:
    name: str
    sim: FaceVendorServer
    make: Callable[..., HostedFaceClient]  # make(api_key=...) -> a client at the simulator
    key_header: str  # header (lower-case) that carries the key
    key_value: Callable[[str], str]  # its value for a key
    uploaded: Callable[[], bytes]  # the WAV the vendor received (last one)
    lossless: bool = True  # False: the vendor takes MP3 (Synthesia), so `uploaded` is it decoded
    auth_status: int = 401  # what the vendor answers a wrong key


def speech(seconds: float = 1.2, seed: int = 7) -> np.ndarray:
    """Voice-like int16 audio: a 180 Hz tone with noise, distinct per seed."""
    n = int(RATE * seconds)
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    wave = 6000 * np.sin(2 * np.pi * 180 * t) + rng.normal(0, 800, n)
    return np.clip(wave, -32768, 32767).astype(np.int16)


def _last_part(sim: FaceVendorServer, field: str, path_has: str) -> bytes:
    for recorded in reversed(sim.requests):
        if recorded.method == "POST" and path_has in recorded.path:
            part = multipart_files(recorded).get(field)
            if part:
                return part[1]
    raise AssertionError(f"no {field!r} upload reached the simulator")


# The fast lane runs each test against D-ID's flow (every vendor shares VendorHttp's calls, polls,
# retries and download); the whole suite runs it against all four. Each simulated job renders a
# real mp4 with ffmpeg, seconds of CPU over the four vendors' tests.
_VENDORS = ["d-id", *(pytest.param(name, marks=pytest.mark.slow) for name in ("tavus", "hedra", "synthesia"))]


@pytest.fixture(params=_VENDORS)
def vendor(request: pytest.FixtureRequest) -> Iterator[Vendor]:
    name = request.param
    clients: list[HostedFaceClient] = []
    if name == "d-id":
        sim: FaceVendorServer = DIdServer().start()
        make = lambda api_key=sim.api_key: create_client(  # noqa: E731
            "d-id", sim.api_url, api_key, None, poll_interval=POLL, avatar_image=DEFAULT_AVATAR
        )
        v = Vendor(name, sim, make, "authorization", lambda k: f"Basic {k}",
                   lambda: _last_part(sim, "audio", "/audios"))  # fmt: skip
        host = None
    elif name == "tavus":
        sim = TavusServer().start()
        host = AudioHost("").start()
        make = lambda api_key=sim.api_key: create_client(  # noqa: E731
            "tavus", sim.api_url, api_key, "r79e1c033f", poll_interval=POLL, audio_url_for=host.publish
        )
        v = Vendor(name, sim, make, "x-api-key", lambda k: k, lambda: sim.fetched_audio[-1][1])  # type: ignore[attr-defined]
    elif name == "hedra":
        sim = HedraServer().start()
        make = lambda api_key=sim.api_key: create_client(  # noqa: E731
            "hedra", sim.api_url, api_key, None, poll_interval=POLL, avatar_image=DEFAULT_AVATAR
        )
        v = Vendor(name, sim, make, "x-api-key", lambda k: k, lambda: _last_part(sim, "file", "/upload"))
        host = None
    else:
        sim = SynthesiaServer().start()
        make = lambda api_key=sim.api_key: create_client(  # noqa: E731
            "synthesia", sim.api_url, api_key, "anna_costume1_cameraA", poll_interval=POLL
        )
        v = Vendor(name, sim, make, "authorization", lambda k: k,
                   lambda: list(sim.script_audio.values())[-1],  # type: ignore[attr-defined]
                   lossless=False, auth_status=403)  # fmt: skip
        host = None

    def tracked(**kwargs: str) -> HostedFaceClient:
        client = make(**kwargs)
        clients.append(client)
        return client

    v.make = tracked
    yield v
    for client in clients:
        client.close()
    sim.stop()
    if host is not None:
        host.stop()


def api_requests(sim: FaceVendorServer) -> list[Recorded]:
    """Requests to the vendor's API (not to its storage, where results are downloaded)."""
    return [r for r in sim.requests if not r.path.startswith("/results/")]


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
