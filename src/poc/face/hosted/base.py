"""The hosted talking-face contract: ask a vendor for a video of the avatar saying our audio.

A hosted face is not an engine fed frame by frame: the vendor takes the whole utterance, works
for seconds to minutes, and hands back a video file. So the contract is one blocking call per
message, `render`, run in a worker thread while the stream stays on the idle avatar; the caller
then decodes the file (`decode_video`) and plays its frames with our own audio on our clock.

Errors carry a `kind` label for metrics and for deciding what to do next; every kind means
"speak these words with the local engine instead":
- "auth": the vendor refused the key (401/403). Permanent until the key is fixed.
- "failed": the vendor refused the request (other 4xx) or its job ended in an error status.
- "timeout": the deadline passed before the video was downloaded.
- "unavailable": the vendor could not be reached or answered 429/5xx.
- "bad_video": the result is not a video we can decode.
- "cancelled": the caller set `cancelled` (an interrupt or a clear); not a vendor fault.
Messages are one line, name the vendor, and never contain the API key.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

VENDORS = ("d-id", "tavus", "hedra", "synthesia")

AudioPublisher = Callable[[bytes], str]
"""Makes WAV bytes reachable by the vendor and returns their URL (Tavus fetches audio by URL)."""


class HostedFaceError(RuntimeError):
    """A hosted face could not be made; see the module docstring for the kinds."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class HostedFaceClient(Protocol):
    name: str  # the vendor, as TALKING_FACE_API names it ("d-id", "tavus", "hedra", "synthesia")

    def render(
        self,
        audio: np.ndarray,
        sample_rate: int,
        *,
        deadline: float,
        cancelled: threading.Event | None = None,
    ) -> Path:
        """Run the vendor's create → poll → download flow for `audio` (int16 mono speech of one
        message) and return the downloaded video file, which the caller owns and deletes.

        Raises HostedFaceError. Gives up with kind "timeout" once time.monotonic() >= deadline
        and with kind "cancelled" within one poll step of `cancelled` being set (one HTTP request
        at most, each bounded by the time left). Synchronous: run it in a worker thread."""
        ...

    def close(self) -> None:
        """Release the HTTP connections."""
        ...


def create_client(
    vendor: str,
    api_url: str | None,
    api_key: str,
    avatar_id: str | None,
    *,
    poll_interval: float = 1.0,
    avatar_image: Path | None = None,
    audio_url_for: AudioPublisher | None = None,
    language: str | None = None,
) -> HostedFaceClient:
    """A client for `vendor` ("d-id", "tavus", "hedra" or "synthesia") at `api_url` (None: the
    vendor's own API host). `avatar_id` is TALKING_FACE_AVATAR_ID: D-ID's source image URL, Tavus's
    replica id, Hedra's image asset id, Synthesia's avatar id. With no avatar id, D-ID and Hedra
    upload `avatar_image` once (the local avatar, so the vendor's face is ours); Tavus and
    Synthesia need one (neither API makes an avatar from an image). Tavus fetches audio by URL,
    so it needs `audio_url_for` (see face/hosted/audio_host.py). `language` is TTS_LANGUAGE,
    which Synthesia must be told with uploaded speech (empty: en-US).

    Raises ValueError, one line naming the setting, when the settings cannot work."""
    if not api_key:
        raise ValueError("TALKING_FACE_API_KEY: a key is required for the hosted face API")
    if poll_interval <= 0:
        raise ValueError("poll_interval must be positive")
    name = vendor.strip().lower()
    if name == "d-id":
        from poc.face.hosted.did import DIdClient

        _need_avatar(name, avatar_id, avatar_image)
        return DIdClient(api_url, api_key, avatar_id, avatar_image, poll_interval=poll_interval)
    if name == "tavus":
        from poc.face.hosted.tavus import TavusClient

        if not avatar_id:
            raise ValueError("TALKING_FACE_AVATAR_ID: Tavus needs the replica id to speak with")
        if audio_url_for is None:
            raise ValueError(
                "tavus: Tavus fetches the speech from a public URL; give it an audio publisher"
            )
        return TavusClient(api_url, api_key, avatar_id, audio_url_for, poll_interval=poll_interval)
    if name == "hedra":
        from poc.face.hosted.hedra import HedraClient

        _need_avatar(name, avatar_id, avatar_image)
        return HedraClient(api_url, api_key, avatar_id, avatar_image, poll_interval=poll_interval)
    if name == "synthesia":
        from poc.face.hosted.synthesia import SynthesiaClient

        if not avatar_id:
            raise ValueError(
                "TALKING_FACE_AVATAR_ID: Synthesia needs a stock or custom avatar id "
                "(its API cannot make an avatar from an image)"
            )
        return SynthesiaClient(api_url, api_key, avatar_id, poll_interval=poll_interval, language=language)
    raise ValueError(f"TALKING_FACE_API: unknown {vendor!r} (choose {', '.join(VENDORS)})")


def _need_avatar(vendor: str, avatar_id: str | None, avatar_image: Path | None) -> None:
    if avatar_id:
        return
    if avatar_image is None or not avatar_image.is_file():
        raise ValueError(
            f"TALKING_FACE_AVATAR_ID: {vendor} needs an avatar id, or a local avatar image to upload"
        )
