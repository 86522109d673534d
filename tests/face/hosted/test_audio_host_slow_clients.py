"""The public audio port against clients that hold connections open by being slow rather than
silent: a byte now and then keeps a connection inside the idle timeout, so only deadlines on
the request head and on the response free the slot for the vendor (Tavus) fetching speech."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from poc.face.hosted import audio_host
from poc.face.hosted.audio_host import MAX_CONNECTIONS, MAX_PER_ADDRESS, AudioHost

pytestmark = pytest.mark.slow  # each waits out a connection deadline

HANG_S = 30.0  # far beyond any deadline below: only a connection held for good gets here
DEADLINE_S = 0.5  # the deadlines these tests set
GIVE_UP_S = 5.0  # ten times those deadlines: generous, yet far short of a trickle's hold
TRICKLE_EVERY_S = 0.1  # well inside the idle timeout the tests set


def _connect_from(source: str, port: int) -> socket.socket:
    """A connection from another loopback address (Linux routes all of 127/8 to lo)."""
    conn = socket.socket()
    conn.bind((source, 0))
    conn.connect(("127.0.0.1", port))
    return conn


class Trickler:
    """Sends each of its connections a request head a byte at a time, one every TRICKLE_EVERY_S:
    never silent long enough for the idle timeout, never done (header after header)."""

    HEAD = b"GET /AAAAAAAAAAAAAAAAAAAAAA.wav HTTP/1.1\r\nHost: audio\r\n" + b"X-Pad: 0\r\n" * 1000

    def __init__(self, conns: list[socket.socket]) -> None:
        self.conns = conns
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def _trickle(self) -> None:
        sent = 0
        while not self._stop.wait(TRICKLE_EVERY_S) and sent < len(self.HEAD):
            for conn in self.conns:
                try:
                    conn.send(self.HEAD[sent : sent + 1])
                except OSError:
                    pass  # closed by the server: what the tests wait for
            sent += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(HANG_S)
        for conn in self.conns:
            conn.close()


def _closed_by_server(conn: socket.socket, within: float) -> bool:
    """Whether the server closes `conn` within `within` seconds (what it sent before is skipped)."""
    conn.settimeout(within)
    try:
        while conn.recv(65536):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def _served_within(url: str, seconds: float) -> bytes | None:
    """The vendor's fetch, retried while the port refuses it (every slot busy); None when it is
    not served within `seconds`."""
    give_up = time.monotonic() + seconds
    while time.monotonic() < give_up:
        try:
            response = httpx.get(url, timeout=seconds)
            if response.status_code == 200:
                return response.content
        except httpx.TransportError:
            pass  # refused: closed at once
        time.sleep(0.05)
    return None


def _read_response(conn: socket.socket) -> tuple[bytes, bytes]:
    """One HTTP response off a raw connection: its head, lower-cased, and its body."""
    conn.settimeout(HANG_S)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    head = head.lower()
    length = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
    while len(body) < length:
        chunk = conn.recv(65536)
        assert chunk, "closed inside the body"
        body += chunk
    return head, body


@pytest.fixture
def trickler_cleanup() -> Iterator[list[Trickler]]:
    tricklers: list[Trickler] = []
    yield tricklers
    for trickler in tricklers:
        trickler.stop()


def test_clients_trickling_request_heads_cannot_hold_the_port_against_the_vendor(
    trickler_cleanup: list[Trickler],
) -> None:
    """Clients from several addresses (each within its MAX_PER_ADDRESS share) take every slot,
    each trickling its request head a byte at a time, always inside the idle timeout. The head
    deadline closes them, and the vendor's fetch is served."""
    sources = [f"127.0.0.{10 + i}" for i in range(MAX_CONNECTIONS // MAX_PER_ADDRESS)]
    with AudioHost("", idle_timeout_s=2.0, head_timeout_s=DEADLINE_S) as host:
        conns = [_connect_from(source, host.port) for source in sources for _ in range(MAX_PER_ADDRESS)]
        trickler = Trickler(conns)
        trickler_cleanup.append(trickler)
        url = host.publish(b"RIFF-speech")
        assert _served_within(url, GIVE_UP_S) == b"RIFF-speech", "trickling clients held every slot"
        held = [conn for conn in conns if not _closed_by_server(conn, GIVE_UP_S)]
        assert not held, f"{len(held)} trickling connections held past the head deadline"


def test_a_kept_alive_connection_gets_the_head_deadline_for_its_next_request(
    trickler_cleanup: list[Trickler],
) -> None:
    """After a response the connection stays open for the next request (keep-alive); that
    request, trickled, is cut off at the head deadline like a first one."""
    with AudioHost("", idle_timeout_s=HANG_S, head_timeout_s=DEADLINE_S) as host:
        token = host.publish(b"RIFF-speech").rsplit("/", 1)[1]
        conn = socket.create_connection(("127.0.0.1", host.port))
        conn.sendall(f"GET /{token} HTTP/1.1\r\nHost: audio\r\n\r\n".encode())
        head, body = _read_response(conn)
        assert body == b"RIFF-speech" and b"connection: close" not in head  # kept alive
        trickler_cleanup.append(Trickler([conn]))
        assert _closed_by_server(conn, GIVE_UP_S), "a trickled second request held the connection"


def test_a_request_for_an_unknown_file_closes_the_connection() -> None:
    """A scanner guessing names gets its 404 and the connection closed: it cannot hold slots on
    keep-alive (no deadline is near here, only the Connection: close)."""
    with AudioHost("", idle_timeout_s=HANG_S, head_timeout_s=HANG_S) as host:
        conn = socket.create_connection(("127.0.0.1", host.port))
        with conn:
            conn.sendall(b"GET /AAAAAAAAAAAAAAAAAAAAAA.wav HTTP/1.1\r\nHost: audio\r\n\r\n")
            head, _ = _read_response(conn)
            assert head.startswith(b"http/1.1 404") and b"connection: close" in head
            assert _closed_by_server(conn, GIVE_UP_S)


def test_a_fetcher_that_stops_reading_lets_go_of_its_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    """A response must be sent within its deadline (a floor plus its size at a minimum rate):
    a client that asks for a file and reads none of it is closed then, and the one slot it
    held serves the vendor."""
    monkeypatch.setattr(audio_host, "SEND_MIN_RATE", 1e12)  # the deadline is the floor alone
    big = b"RIFF" + bytes(64 * 1024 * 1024)  # far more than loopback's socket buffers hold
    with AudioHost("", max_connections=1, idle_timeout_s=HANG_S, send_timeout_s=DEADLINE_S) as host:
        stalled = socket.create_connection(("127.0.0.1", host.port))
        with stalled:
            token = host.publish(big).rsplit("/", 1)[1]
            stalled.sendall(f"GET /{token} HTTP/1.1\r\nHost: audio\r\n\r\n".encode())
            stalled.settimeout(HANG_S)
            assert stalled.recv(4096)  # being served: the slot is its, before the vendor comes
            url = host.publish(b"RIFF-speech")
            assert _served_within(url, GIVE_UP_S) == b"RIFF-speech", "a stalled reader held the slot"
