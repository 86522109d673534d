"""The HTTP half every hosted-face vendor shares: calls, polling and the download, under a deadline.

The vendors publish no Python SDKs, so each client is httpx against the documented REST API.
What is the same for every vendor lives here, written once:
- every request is bounded by the time left before the caller's deadline (and REQUEST_TIMEOUT_S),
  and the cancel event is checked before each request and during each wait, so `render` gives
  up within one request of a cancel or the deadline;
- HTTP answers map onto HostedFaceError kinds (401/403 auth, 429/5xx unavailable, other 4xx
  failed); a poll is retried after any transient failure (it is idempotent), any other call
  only after a 429 (the vendor refused it undone; a 5xx may have created a job that bills): a
  few in a row are waited out, honouring Retry-After. A wait that would end past the deadline
  is not sat out: the error is raised at once, saying how long the vendor asked to wait;
- the result is downloaded with a separate client that carries no key, because result URLs
  are pre-signed storage/CDN links on other hosts (S3 refuses a request carrying both an
  Authorization header and a signed query, and the key must not travel to a third party);
- no message ever contains the key: vendor text is flattened to one line and scrubbed.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from poc.face.hosted.base import HostedFaceError
from poc.face.hosted.wav import encode_wav
from poc.speech.faults import parse_retry_after

REQUEST_TIMEOUT_S = 30.0  # one API call; the caller's deadline usually bounds it sooner
POLL_RETRIES = 3  # transient poll failures (or 429s to a call) in a row before giving up as "unavailable"
RATE_LIMITED_PAUSE_S = 1.0  # the wait after a 429 that says no Retry-After
MAX_VIDEO_BYTES = 512 * 1024 * 1024  # a minute of 1080p is ~30 MB; more is not a talking head
MAX_DETAIL_CHARS = 160

# What a poll check returns: the result URL once the job is done, None while it is still working.
PollCheck = Callable[[Mapping[str, Any]], str | None]


class VendorHttp:
    """One vendor's API at `base_url`, authenticated by `auth_headers` (which hold `api_key`)."""

    def __init__(
        self,
        vendor: str,
        base_url: str,
        api_key: str,
        auth_headers: Mapping[str, str],
        *,
        poll_interval: float,
    ) -> None:
        self.vendor = vendor
        self.poll_interval = poll_interval
        self._secret = api_key
        self._api = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={**auth_headers, "Accept": "application/json"},
            timeout=REQUEST_TIMEOUT_S,
        )
        self._plain = httpx.Client(follow_redirects=True, timeout=REQUEST_TIMEOUT_S)

    def close(self) -> None:
        self._api.close()
        self._plain.close()

    # -- calls ---------------------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        deadline: float,
        cancelled: threading.Event | None,
        what: str,
        json: Any = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        content: tuple[bytes, str] | None = None,
    ) -> dict[str, Any]:
        """One API call; its JSON object answer. `what` names the step in error messages.
        The body is `json`, a form of `files`, or `content` (bytes, their MIME type: a file
        posted as itself). `path` may be a whole URL on another host of the vendor's.
        A 429 is sent again after the wait it asks for, up to POLL_RETRIES times."""
        refusals = 0
        while True:
            try:
                return self._call_once(
                    method, path, deadline=deadline, cancelled=cancelled, what=what,
                    json=json, files=files, content=content,
                )  # fmt: skip
            except _Transient as exc:
                refusals += 1
                if exc.status != 429 or refusals > POLL_RETRIES:
                    raise
                self._wait_out(exc, RATE_LIMITED_PAUSE_S, deadline, cancelled, what)

    def _call_once(
        self,
        method: str,
        path: str,
        *,
        deadline: float,
        cancelled: threading.Event | None,
        what: str,
        json: Any = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        content: tuple[bytes, str] | None = None,
    ) -> dict[str, Any]:
        self.check(deadline, cancelled, what)
        raw, headers = (content[0], {"Content-Type": content[1]}) if content else (None, None)
        try:
            response = self._api.request(
                method, path, json=json, files=files, content=raw, headers=headers,
                timeout=self._timeout(deadline),
            )  # fmt: skip
        except httpx.TimeoutException:
            raise self._late(deadline, what) from None
        except httpx.HTTPError as exc:
            raise _Transient(
                self._scrub(f"{self.vendor}: cannot reach the API to {what}: {type(exc).__name__}"),
                "unavailable",
            ) from None
        if response.status_code >= 400:
            raise self._status_error(response, what)
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise self.error(f"answered {what} with something that is not a JSON object", "failed")
        return payload

    def poll(
        self,
        path: str,
        check: PollCheck,
        *,
        deadline: float,
        cancelled: threading.Event | None,
        what: str,
    ) -> str:
        """GET `path` every poll_interval until `check` returns the result URL (it raises when
        the job failed). Transient failures are retried up to POLL_RETRIES times in a row."""
        failures = 0
        while True:
            self.wait(self.poll_interval, deadline, cancelled, what)
            try:
                payload = self._call_once("GET", path, deadline=deadline, cancelled=cancelled, what=what)
            except _Transient as exc:
                failures += 1
                if failures > POLL_RETRIES:
                    raise
                self._wait_out(exc, 0.0, deadline, cancelled, what)  # then the poll interval
                continue
            failures = 0
            url = check(payload)
            if url:
                return url

    def speech_file(
        self, audio: Any, sample_rate: int, encode: Callable[[Any, int], bytes] = encode_wav
    ) -> bytes:
        """The message's speech as the file the vendor takes (a WAV unless `encode` says
        otherwise); "failed" if it cannot be one."""
        try:
            return encode(audio, sample_rate)
        except ValueError as exc:
            raise self.error(str(exc), "failed") from None

    def new_id(self, answer: Mapping[str, Any], field: str, noun: str) -> str:
        """The id a create call answered with; "failed" when it has none."""
        job_id = text_field(answer, field)
        if not job_id:
            raise self.error(f"answered the new {noun} without {'an' if field[0] in 'aeiou' else 'a'} {field}", "failed")
        return job_id

    def finish(
        self, path: str, status: PollCheck, *, deadline: float, cancelled: threading.Event | None, what: str
    ) -> Path:
        """Poll the job at `path` until `status` gives its result URL, then download it."""
        url = self.poll(path, status, deadline=deadline, cancelled=cancelled, what=what)
        return self.download(url, deadline=deadline, cancelled=cancelled)

    def download(self, url: str, *, deadline: float, cancelled: threading.Event | None) -> Path:
        """Stream `url` (no key sent) into a new temporary .mp4 file and return its path."""
        self.check(deadline, cancelled, "download the video")
        absolute = str(self._api.base_url.join(url))
        fd, name = tempfile.mkstemp(prefix=f"poc-{self.vendor}-", suffix=".mp4")
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                with self._plain.stream("GET", absolute, timeout=self._timeout(deadline)) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise self._status_error(response, "download the video", keyless=True)
                    size = 0
                    # Each piece as the network hands it over, never gathered into fixed-size
                    # blocks: a CDN trickling a few bytes at a time would otherwise keep every
                    # read inside its timeout and never reach this check, holding the message
                    # (and every one queued behind it) far past the deadline.
                    for block in response.iter_bytes():
                        self.check(deadline, cancelled, "download the video")
                        size += len(block)
                        if size > MAX_VIDEO_BYTES:
                            raise self.error(
                                f"video is larger than {MAX_VIDEO_BYTES >> 20} MiB", "bad_video"
                            )
                        out.write(block)
            if size == 0:
                raise self.error("returned an empty video", "bad_video")
            return path
        except httpx.TimeoutException:
            path.unlink(missing_ok=True)
            raise self._late(deadline, "download the video") from None
        except httpx.HTTPError as exc:
            path.unlink(missing_ok=True)
            raise self.error(f"cannot download the video: {type(exc).__name__}", "unavailable") from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    # -- time ----------------------------------------------------------------------------------

    def check(self, deadline: float, cancelled: threading.Event | None, what: str) -> None:
        """Raise "cancelled" or "timeout" if the caller stopped waiting."""
        if cancelled is not None and cancelled.is_set():
            raise self.error(f"cancelled while waiting to {what}", "cancelled")
        if time.monotonic() >= deadline:
            raise self.error(f"gave up: the deadline passed while waiting to {what}", "timeout")

    def wait(self, seconds: float, deadline: float, cancelled: threading.Event | None, what: str) -> None:
        """Sleep `seconds`, waking at once on cancel and at the deadline (then raising)."""
        self.check(deadline, cancelled, what)
        pause = max(0.0, min(seconds, deadline - time.monotonic()))
        if cancelled is not None:
            cancelled.wait(pause)
        else:
            time.sleep(pause)
        self.check(deadline, cancelled, what)

    def _wait_out(
        self, error: "_Transient", default: float, deadline: float, cancelled: threading.Event | None, what: str
    ) -> None:
        """Sleep the wait `error` asks for (`default` when it names none); raise `error` at once
        when that wait would end past the deadline: nothing would be left to ask again."""
        pause = default if error.retry_after is None else error.retry_after
        if time.monotonic() + pause >= deadline:
            raise error
        self.wait(pause, deadline, cancelled, what)

    def _timeout(self, deadline: float) -> float:
        return max(0.05, min(REQUEST_TIMEOUT_S, deadline - time.monotonic()))

    def _late(self, deadline: float, what: str) -> HostedFaceError:
        if time.monotonic() >= deadline:
            return self.error(f"gave up: the deadline passed while waiting to {what}", "timeout")
        return _Transient(self._scrub(f"{self.vendor}: no answer in time to {what}"), "unavailable")

    # -- errors --------------------------------------------------------------------------------

    def error(self, text: str, kind: str) -> HostedFaceError:
        return HostedFaceError(self._scrub(f"{self.vendor}: {text}"), kind)

    def _status_error(self, response: httpx.Response, what: str, keyless: bool = False) -> HostedFaceError:
        status = response.status_code
        said = self.detail(_json_or_text(response))
        suffix = f": {said}" if said else ""
        if status in (401, 403) and not keyless:
            return self.error(f"rejected the API key (HTTP {status}) to {what}{suffix}", "auth")
        if status == 429 or status >= 500 or status == 408:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            asks = f" (Retry-After {retry_after:g} s)" if retry_after is not None else ""
            return _Transient(
                self._scrub(f"{self.vendor}: HTTP {status}{asks} to {what}{suffix}"), "unavailable",
                retry_after, status,
            )  # fmt: skip
        return self.error(f"refused to {what} (HTTP {status}){suffix}", "failed")

    def detail(self, payload: Any) -> str:
        """The vendor's own words about a failure, one line, short, without the key."""
        text = ""
        if isinstance(payload, Mapping):
            for key in ("description", "message", "error_message", "status_details", "detail", "error"):
                value = payload.get(key)
                if isinstance(value, Mapping):
                    value = self.detail(value)
                if value:
                    text = str(value)
                    break
        elif payload:
            text = str(payload)
        flat = " ".join(text.split())
        if len(flat) > MAX_DETAIL_CHARS:
            flat = flat[: MAX_DETAIL_CHARS - 1] + "…"
        return self._scrub(flat)

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text


class _Transient(HostedFaceError):
    """An "unavailable" answer a poll may wait out (429, 5xx, no answer in time)."""

    def __init__(self, message: str, kind: str, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message, kind)
        self.retry_after = retry_after
        self.status = status  # the HTTP status, when the vendor answered


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def text_field(payload: Mapping[str, Any], key: str) -> str:
    """payload[key] when it is a non-empty string, else ""."""
    value = payload.get(key)
    return value if isinstance(value, str) else ""


def image_mime(path: Path) -> str:
    return "image/png" if path.suffix.lower() == ".png" else "image/jpeg"


class JobStatus:
    """A vendor job's status, read the one way every vendor needs: the result URL when it
    is done, None while it works, a "failed" HostedFaceError when it ended badly or says a status
    we do not know. `noun` names the job in messages ("talk", "video", "generation")."""

    def __init__(
        self,
        http: "VendorHttp",
        noun: str,
        *,
        done: str,
        url_fields: tuple[str, ...],
        working: tuple[str, ...],
        failed: tuple[str, ...],
        detail: Callable[[Mapping[str, Any]], Any],
    ) -> None:
        self._http, self._noun, self._done = http, noun, done
        self._url_fields, self._working, self._failed, self._detail = url_fields, working, failed, detail

    def __call__(self, job: Mapping[str, Any]) -> str | None:
        http, noun = self._http, self._noun
        status = text_field(job, "status")
        if status == self._done:
            url = next((u for u in (text_field(job, f) for f in self._url_fields) if u), "")
            if not url:
                raise http.error(f"{noun} is {status} but has no {self._url_fields[0]}", "failed")
            return url
        if status in self._failed:
            said = http.detail(self._detail(job))
            raise http.error(f"{noun} ended with status {status!r}: {said}", "failed")
        if status in self._working:
            return None
        raise http.error(f"{noun} has an unknown status {status!r}", "failed")
