"""Serve speech WAVs over HTTP so a vendor that takes audio only by URL (Tavus) can fetch them.

`AudioHost(public_base_url, host, port)` listens on host:port and `publish(wav)` returns
`<public_base_url>/<token>.wav`, where the token is 128 random bits, so a file is only found by
whoever was given its URL. The operator makes `public_base_url` reach this port (a reverse
proxy, a tunnel, a public address). Files are kept `ttl_seconds` (the vendor fetches once, at
the start of its job) and at most `max_files`; they live in memory, a minute of 44.1 kHz speech
being ~5 MB. Any other publisher (a presigned S3 upload...) can stand in: Tavus's client only
needs a callable `wav bytes -> url`.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class AudioHost:
    def __init__(
        self,
        public_base_url: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ttl_seconds: float = 3600.0,
        max_files: int = 64,
    ) -> None:
        self._base = public_base_url.rstrip("/") if public_base_url else ""
        self._ttl = ttl_seconds
        self._max = max_files
        self._files: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        host_ = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # tokens are capabilities: keep them out of logs
                pass

            def do_GET(self) -> None:
                name = self.path.split("?", 1)[0].rsplit("/", 1)[-1]
                body = host_._lookup(name.removesuffix(".wav")) if name.endswith(".wav") else None
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "audio/wav")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._http = ThreadingHTTPServer((host, port), Handler)
        self._http.daemon_threads = True
        # serve_forever checks for shutdown every poll_interval (0.5 s by default): stop() would
        # wait that long, on every service shutdown and every test.
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, name="AudioHost", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._http.server_address[1])

    def start(self) -> "AudioHost":
        if not self._base:
            host, port = self._http.server_address[:2]
            self._base = f"http://{host}:{port}"
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()

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
