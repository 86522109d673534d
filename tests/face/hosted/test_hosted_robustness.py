"""Hosted faces against hostile or odd surroundings: a storage link that trickles the video, a
public audio port that strangers hold connections open on, and several stations speaking
through Tavus on the one audio port the process has."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from poc.face.hosted import HostedFaceError
from poc.face.hosted.audio_host import MAX_CONNECTIONS, MAX_PER_ADDRESS, AudioHost

from .conftest import RATE, Vendor, speech

HANG_S = 30.0  # far beyond any deadline below: only a hang gets here


class TricklingStorage:
    """A storage host that answers a video download with its headers, then 10 bytes every
    50 ms: never silent long enough for a read to time out, nor near the end of the file."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/video.mp4"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: 400000000\r\n\r\n")
                while not self._stop.wait(0.05):
                    conn.sendall(b"\0" * 10)
            except OSError:
                pass

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()


@pytest.fixture
def trickling() -> Iterator[TricklingStorage]:
    storage = TricklingStorage()
    yield storage
    storage.stop()


@pytest.mark.slow  # waits out its 5 s deadline per vendor
def test_a_video_download_that_trickles_gives_up_at_the_deadline(vendor: Vendor, trickling: TricklingStorage) -> None:
    """A slow CDN must not hold the message (and every message queued behind it) past
    TALKING_FACE_API_TIMEOUT_SECONDS: the local engine is to speak it once the deadline passes."""
    vendor.sim.result_url = lambda job: trickling.url  # type: ignore[method-assign]
    client = vendor.make()
    outcome: dict[str, object] = {}

    def render() -> None:
        try:
            outcome["path"] = client.render(speech(0.5), RATE, deadline=time.monotonic() + 5)
        except HostedFaceError as error:
            outcome["error"] = error

    worker = threading.Thread(target=render, daemon=True)
    worker.start()
    worker.join(HANG_S)
    assert not worker.is_alive(), "the download went on long past the deadline"
    error = outcome.get("error")
    assert isinstance(error, HostedFaceError) and error.kind == "timeout", outcome


def _connect_idle(port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]


def _closed_by_server(conn: socket.socket) -> bool:
    conn.settimeout(HANG_S)
    try:
        return conn.recv(1) == b""
    except ConnectionResetError:
        return True


def test_idle_connections_to_the_audio_port_cannot_pile_up_threads() -> None:
    """The audio port is public. Connections that never send a request (a scanner, a
    half-open proxy) must not each hold a thread for ever: they are bounded, then closed."""
    with AudioHost("") as host:
        before = threading.active_count()
        idle = _connect_idle(host.port, 60)
        try:
            time.sleep(0.3)  # let the server accept them all
            assert threading.active_count() - before <= 40, "a thread per idle connection"
        finally:
            for conn in idle:
                conn.close()
    with AudioHost("", idle_timeout_s=0.5) as host:
        idle = _connect_idle(host.port, 5)
        try:
            assert all(_closed_by_server(conn) for conn in idle)
        finally:
            for conn in idle:
                conn.close()
        url = host.publish(b"RIFF-speech")
        assert httpx.get(url, timeout=10).content == b"RIFF-speech"  # and the vendor is served


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_two_stations_publish_their_speech_on_the_one_audio_port() -> None:
    """TALKING_FACE_AUDIO_PORT is the process's: a second Tavus station shares it instead of
    failing to start, each station's files are served until that station stops, and the port
    is free again once both have stopped."""
    port = _free_port()
    first = AudioHost(f"http://127.0.0.1:{port}", "127.0.0.1", port).start()
    second = AudioHost(f"http://127.0.0.1:{port}", "127.0.0.1", port).start()
    try:
        one, two = first.publish(b"RIFF-one"), second.publish(b"RIFF-two")
        assert httpx.get(one, timeout=10).content == b"RIFF-one"
        assert httpx.get(two, timeout=10).content == b"RIFF-two"
        first.stop()
        assert httpx.get(one, timeout=10).status_code == 404  # a stopped station's speech goes
        assert httpx.get(two, timeout=10).content == b"RIFF-two"
    finally:
        first.stop()
        second.stop()
    with socket.create_server(("127.0.0.1", port)):
        pass  # the port was let go


def test_two_tavus_stations_both_start(tmp_path: Path) -> None:
    """Two stations of one process speaking through Tavus (the audio port is set once for the
    process): both are built and serve their speech."""
    from poc.app import Service
    from poc.config import load_settings

    port = _free_port()
    env = {
        "TTS_PROVIDER": "espeak", "TALKING_FACE_PROVIDER": "api", "TALKING_FACE_API": "tavus",
        "TALKING_FACE_API_KEY": "sim-key", "TALKING_FACE_API_URL": f"http://127.0.0.1:{_free_port()}",
        "TALKING_FACE_AVATAR_ID": "r79e1c033f", "TALKING_FACE_AUDIO_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "TALKING_FACE_AUDIO_HOST": "127.0.0.1", "TALKING_FACE_AUDIO_PORT": str(port), "HTTP_PORT": "0",
        "RTMP_RESOLUTION": "320x240", "IDLE_BLINKS": "false", "IDLE_MOTION": "0",
    }  # fmt: skip
    services = []
    try:
        for name in ("a", "b"):
            overrides = {"RABBITMQ_QUEUE": f"q_{name}", "RTMP_URL": f"rtmp://127.0.0.1:1935/live/{name}"}
            services.append(Service(load_settings(env, env_file=tmp_path / "none.env", overrides=overrides)))
        for i, service in enumerate(services):
            url = service.audio_host.publish(f"RIFF-{i}".encode())
            assert httpx.get(url, timeout=10).content == f"RIFF-{i}".encode()
    finally:
        for service in services:
            service.discard()


def test_a_station_starting_while_the_last_one_on_the_audio_port_stops_can_listen() -> None:
    """One Tavus station stops (discarded after a failure, say) while another is being built
    for the same process-wide port: the new one either shares the server or finds the port
    free. Taking the server out of the registry before closing its socket left a window in
    which the new one found no server to share, yet the port still taken (address in use: the
    station failed to build)."""
    port = _free_port()
    for _ in range(10):
        leaving = AudioHost(f"http://127.0.0.1:{port}", "127.0.0.1", port).start()
        stopping = threading.Thread(target=leaving.stop)
        stopping.start()
        time.sleep(0.005)  # inside the stop: the listener's shutdown takes up to its poll interval
        try:
            arriving = AudioHost(f"http://127.0.0.1:{port}", "127.0.0.1", port).start()
        finally:
            stopping.join(HANG_S)
        try:
            url = arriving.publish(b"RIFF-new")
            assert httpx.get(url, timeout=10).content == b"RIFF-new"
        finally:
            arriving.stop()


def _connect_idle_from(source: str, port: int, count: int) -> list[socket.socket]:
    """Idle connections from another loopback address (Linux routes all of 127/8 to lo)."""
    conns = []
    for _ in range(count):
        conn = socket.socket()
        conn.bind((source, 0))
        conn.connect(("127.0.0.1", port))
        conns.append(conn)
    return conns


def test_one_address_cannot_hold_every_connection_of_the_audio_port() -> None:
    """A client holding connections open (a byte now and then keeps each alive) takes at most
    its own share of the port: the vendor, fetching from another address, is still served."""
    with AudioHost("", idle_timeout_s=HANG_S) as host:
        hog = _connect_idle_from("127.0.0.2", host.port, MAX_PER_ADDRESS)
        extra = _connect_idle_from("127.0.0.2", host.port, MAX_CONNECTIONS)
        try:
            assert all(_closed_by_server(conn) for conn in extra), "one address took more than its share"
            url = host.publish(b"RIFF-speech")
            assert httpx.get(url, timeout=10).content == b"RIFF-speech"
        finally:
            for conn in hog + extra:
                conn.close()
