"""Serve speech WAVs over HTTP so a vendor that takes audio only by URL (Tavus) can fetch them.

`AudioHost(public_base_url, host, port)` listens on host:port and `publish(wav)` returns
`<public_base_url>/<token>.wav`, where the token is 128 random bits, so a file is only found by
whoever was given its URL. The operator makes `public_base_url` reach this port (a reverse
proxy, a tunnel, a public address). Files are kept `ttl_seconds` (the vendor fetches once, at
the start of its job) and at most `max_files`; they live in memory, a minute of 44.1 kHz speech
being ~5 MB. Any other publisher (a presigned S3 upload...) can stand in: Tavus's client only
needs a callable `wav bytes -> url`.

TALKING_FACE_AUDIO_HOST/PORT are set once for the process, so every station that speaks through
Tavus publishes on the same port: the AudioHosts of one host:port share one listening server
(each keeps its own files, served while it runs), which closes when the last of them stops.

The port faces the internet, so it is bounded against whoever connects to it: at most
MAX_CONNECTIONS are served at once (one thread each; more are closed at once), at most
MAX_PER_ADDRESS of them for one client address, and a connection that sends nothing for
IDLE_TIMEOUT_S is closed, so idle or half-open connections cannot pile up threads until the
process can start no more, nor one client hold every slot against the vendor.

A byte now and then keeps a connection inside the idle timeout, so the time a connection may
take is bounded as well (slowloris): its request head (request line and headers, which a real
fetcher sends in one packet) must be in within HEAD_TIMEOUT_S of the connection's accept, or of
its previous response on a kept-alive connection; a response must be sent within
SEND_TIMEOUT_S plus its size at SEND_MIN_RATE (a minute of speech: 20 + 80 s), so a fetcher
that stops reading lets go of its slot too. A request for an unknown file is answered with
Connection: close, so a scanner cannot hold a slot on keep-alive. Past a deadline the
connection is closed and its slot freed: clients from many addresses can then take every slot
only by reconnecting all the time, not by holding connections open.
"""

from __future__ import annotations

import io
import secrets
import socket
import threading
import time
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_CONNECTIONS = 32  # served at once; a vendor fetches one file per job
# Served at once for one client address: a client holding connections open (each up to its
# deadlines, or as long as a slow fetcher may) takes its own share, not every slot of the port.
MAX_PER_ADDRESS = 8
IDLE_TIMEOUT_S = 20.0  # a connection silent this long is closed
# The whole request head, from accept (or from the previous response, on keep-alive): a real
# fetcher sends it in one packet; a client trickling it a byte at a time is cut off here.
HEAD_TIMEOUT_S = 10.0
# A response is sent within SEND_TIMEOUT_S plus its size at SEND_MIN_RATE (bytes/s): a minute of
# speech (~5 MB) gets 100 s, far more than a vendor's fetch takes, yet a reader that stalls
# frees its slot.
SEND_TIMEOUT_S = 20.0
SEND_MIN_RATE = 64 * 1024


class _DeadlineIO(io.RawIOBase):
    """The handler's socket, each read and send allowed only what is left of the handler's
    deadline (reads also at most the idle timeout): a socket timeout alone restarts with every
    byte received, so a trickling client would never meet it."""

    def __init__(self, handler: "_Handler") -> None:
        super().__init__()
        self._handler = handler
        self._sock: socket.socket = handler.connection

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._sock.settimeout(min(self._handler.timeout, self._time_left()))
        return self._sock.recv_into(buffer)

    def write(self, data: Any) -> int:
        # sendall's timeout bounds the whole call, not each chunk: the deadline holds.
        self._sock.settimeout(self._time_left())
        self._sock.sendall(data)
        return len(data)

    def _time_left(self) -> float:
        left = self._handler.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("connection deadline passed")  # handle_one_request closes it
        return left


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_SharedServer"
    deadline: float  # monotonic time by which the request head, or the response, is to be done

    def setup(self) -> None:
        self.timeout = self.server.idle_timeout  # StreamRequestHandler puts it on the socket
        super().setup()
        # Closed, not dropped: an open makefile() would keep the socket from closing.
        self.rfile.close()
        self.rfile = io.BufferedReader(_DeadlineIO(self))
        self.wfile = _DeadlineIO(self)

    def handle_one_request(self) -> None:
        # From accept or from the previous response: the next head, all of it, by this time.
        self.deadline = time.monotonic() + self.server.head_timeout
        super().handle_one_request()

    def log_message(self, *args: object) -> None:  # tokens are capabilities: keep them out of logs
        pass

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        # A fetcher may look before it downloads (is it there, is it audio, how big): a 501
        # to that would fail the vendor's job.
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        name = self.path.split("?", 1)[0].rsplit("/", 1)[-1]
        body = self.server.lookup(name.removesuffix(".wav")) if name.endswith(".wav") else None
        sent = len(body or b"") if send_body else 0
        send_s = self.server.send_timeout + sent / SEND_MIN_RATE
        self.deadline = time.monotonic() + send_s
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")  # a scanner gets no keep-alive slot to hold
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)


class _SharedServer(ThreadingHTTPServer):
    """One listening port, its connections bounded, serving the files of every AudioHost on it."""

    daemon_threads = True
    request_queue_size = 64  # a burst is accepted (and refused past the bound) without SYN retries

    def __init__(
        self,
        address: tuple[str, int],
        max_connections: int,
        idle_timeout: float,
        head_timeout: float,
        send_timeout: float,
    ) -> None:
        super().__init__(address, _Handler)
        self.key = address  # as asked for: server_address may spell the host otherwise
        self.idle_timeout = idle_timeout
        self.head_timeout = head_timeout
        self.send_timeout = send_timeout
        self.hosts: list[AudioHost] = []  # guarded by _registry_lock
        self._slots = threading.BoundedSemaphore(max_connections)
        self._per_address: dict[str, int] = {}  # connections being served, by client address
        self._per_address_lock = threading.Lock()
        # serve_forever checks for shutdown every poll_interval (0.5 s by default): stop() would
        # wait that long, on every service shutdown and every test.
        self.thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, name="AudioHost", daemon=True
        )

    def lookup(self, token: str) -> bytes | None:
        for host in list(self.hosts):
            body = host._lookup(token)
            if body is not None:
                return body
        return None

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._take_address(client_address[0]):
            self.shutdown_request(request)  # this address has its share: refuse
            return
        if not self._slots.acquire(blocking=False):
            self._give_address(client_address[0])
            self.shutdown_request(request)  # every slot busy: refuse rather than add a thread
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            self._give_address(client_address[0])
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()
            self._give_address(client_address[0])

    def _take_address(self, address: str) -> bool:
        with self._per_address_lock:
            held = self._per_address.get(address, 0)
            if held >= MAX_PER_ADDRESS:
                return False
            self._per_address[address] = held + 1
            return True

    def _give_address(self, address: str) -> None:
        with self._per_address_lock:
            held = self._per_address.pop(address) - 1
            if held:
                self._per_address[address] = held  # an address with none left is forgotten

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up or times out is routine on a public port


_registry: dict[tuple[str, int], _SharedServer] = {}  # fixed ports in use, shared by stations
_registry_lock = threading.Lock()


class AudioHost:
    def __init__(
        self,
        public_base_url: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ttl_seconds: float = 3600.0,
        max_files: int = 64,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        head_timeout_s: float = HEAD_TIMEOUT_S,
        send_timeout_s: float = SEND_TIMEOUT_S,
    ) -> None:
        """Raises OSError when host:port cannot be listened on (and no AudioHost of this
        process listens there already)."""
        self._base = public_base_url.rstrip("/") if public_base_url else ""
        self._ttl = ttl_seconds
        self._max = max_files
        self._files: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self._stopped = False
        with _registry_lock:
            key = (host, port)
            server = _registry.get(key) if port else None  # port 0: a port of its own
            if server is None:
                server = _SharedServer(key, max_connections, idle_timeout_s, head_timeout_s, send_timeout_s)
                if port:
                    _registry[key] = server
            server.hosts.append(self)
        self._http = server

    @property
    def port(self) -> int:
        return int(self._http.server_address[1])

    def start(self) -> "AudioHost":
        if not self._base:
            host, port = self._http.server_address[:2]
            self._base = f"http://{host}:{port}"
        with _registry_lock:
            if not self._http.thread.is_alive():
                self._http.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving this host's files; the port closes once no AudioHost uses it."""
        server = self._http
        with self._lock:
            self._files.clear()
        # The last user closes the socket before letting go of the registry: an AudioHost made
        # for this port meanwhile would otherwise find no server to share, yet the port still
        # taken (address in use). A second stop() waits here until the port is closed.
        with _registry_lock:
            if self._stopped:
                return
            self._stopped = True
            server.hosts.remove(self)
            if server.hosts:
                return
            if _registry.get(server.key) is server:
                del _registry[server.key]
            if server.thread.is_alive():
                server.shutdown()  # within a poll interval (50 ms); handlers never take this lock
            server.server_close()

    def publish(self, wav: bytes) -> str:
        """Keep `wav` available and return its URL (an AudioPublisher)."""
        token = secrets.token_urlsafe(16)
        now = time.monotonic()
        with self._lock:
            self._files[token] = (now + self._ttl, wav)
            self._expire(now)
        return f"{self._base}/{token}.wav"

    __call__ = publish

    def _lookup(self, token: str) -> bytes | None:
        with self._lock:
            self._expire(time.monotonic())
            entry = self._files.get(token)
            return entry[1] if entry else None

    def _expire(self, now: float) -> None:
        while self._files:
            token, (expires, _) = next(iter(self._files.items()))
            if expires > now and len(self._files) <= self._max:
                break
            del self._files[token]

    def __enter__(self) -> "AudioHost":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
