"""What the vendor SDKs raise, in the speech contract's words (the transport side of faults.py).

The SDKs raise their own status errors (mapped through faults.fault_for_status) and let the HTTP
library's transport errors through while a stream is read. Both httpx (ElevenLabs, Cartesia)
and httpx2 (OpenAI) name them alike: a read timeout is a stall (the vendor went quiet for
TTS_TIMEOUT_SECONDS), a connect timeout or any other transport error means the vendor cannot be
reached. Messages name the vendor, never the key: `vendor_detail` strips it from anything the
vendor said before it goes into a message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import httpx

from poc.speech.base import InvalidSpeechRequest, SpeechError, Stalled, Unavailable
from poc.speech.faults import fault_for_status

try:  # the OpenAI SDK's transport; absent when that SDK is not installed
    import httpx2
except ImportError:  # pragma: no cover - the project installs it with openai
    httpx2 = None

_TIMEOUTS: tuple[type[BaseException], ...] = (httpx.TimeoutException,)
_CONNECT_TIMEOUTS: tuple[type[BaseException], ...] = (httpx.ConnectTimeout, httpx.PoolTimeout)
_TRANSPORT: tuple[type[BaseException], ...] = (httpx.TransportError,)
if httpx2 is not None:
    _TIMEOUTS += (httpx2.TimeoutException,)
    _CONNECT_TIMEOUTS += (httpx2.ConnectTimeout, httpx2.PoolTimeout)
    _TRANSPORT += (httpx2.TransportError,)

TRANSPORT_ERRORS = _TRANSPORT  # catch these around a vendor request and its stream
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*")


def transport_fault(vendor: str, error: BaseException, timeout_s: float) -> SpeechError:
    """The contract error for an httpx/httpx2 transport error while talking to `vendor`."""
    if isinstance(error, _TIMEOUTS + (TimeoutError,)) and not isinstance(error, _CONNECT_TIMEOUTS):
        return Stalled(f"{vendor} sent nothing for {timeout_s:g} s (the stream stalled)")
    said = str(error).strip()
    reason = f"{type(error).__name__}: {said}" if said else type(error).__name__
    return Unavailable(f"{vendor} cannot be reached ({reason})")


def check_language(vendor: str, language: str | None) -> None:
    """InvalidSpeechRequest for a language that is not even shaped like a language tag (checked
    locally: no request is worth sending for it)."""
    if language is not None and not _LANGUAGE.fullmatch(language):
        raise InvalidSpeechRequest(
            f"{language!r} is not a language tag {vendor} understands (e.g. 'en' or 'en-US')"
        )


def status_fault(
    vendor: str, status: int, headers: Mapping[str, str] | None, body: Any, api_key: str
) -> Exception:
    """faults.fault_for_status with the vendor's own explanation, the key removed from it.

    For 401/403 nothing the vendor said is repeated: some vendors echo part of the key there.
    """
    detail = "" if status in (401, 403) else vendor_detail(body, api_key)
    return fault_for_status(vendor, status, headers, detail)


def vendor_detail(body: Any, api_key: str) -> str:
    """The human part of an error body ("message"/"detail"/"error"), without the key."""
    text = _message(body)
    if api_key:
        text = text.replace(api_key, "***")
    return text


def _message(body: Any) -> str:
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return body
    if isinstance(body, Mapping):
        for key in ("message", "detail", "error", "title"):
            if key in body:
                inner = _message(body[key])
                if inner:
                    return inner
        return ""
    if isinstance(body, list) and body:
        first = body[0]
        if isinstance(first, Mapping) and "msg" in first:
            where = ".".join(str(p) for p in first.get("loc", ()))
            return f"{where}: {first['msg']}" if where else str(first["msg"])
        return _message(first)
    return "" if body is None else str(body)
