"""Tavus's video generation API: a replica and our audio in, a video of the replica out.

Documented flow (docs.tavus.io, "Generate Video" / "Get Video"): POST /v2/videos with
`replica_id` and `audio_url` (a .wav or .mp3 Tavus downloads itself, so it must be publicly
reachable: Tavus has no upload endpoint for it), poll GET /v2/videos/{video_id} through
"queued"/"generating" until "ready" (with `download_url`) or "error"/"deleted" (with
`status_details`), then download `download_url`. Auth: the `x-api-key` header. No official
Python SDK exists, so this is httpx against that REST API.

Because the audio goes by URL, the client is given a publisher, `audio_url_for(wav) -> url`:
face/hosted/audio_host.py serves the WAV from poc itself at an address the operator exposes;
any other (an S3 presigned upload, say) fits the same callable.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from poc.face.hosted.base import AudioPublisher
from poc.face.hosted.http import VendorHttp, text_field
from poc.face.hosted.wav import encode_wav

DEFAULT_URL = "https://tavusapi.com"
WORKING = ("queued", "generating")
FAILED = ("error", "deleted")


class TavusClient:
    name = "tavus"

    def __init__(
        self,
        api_url: str | None,
        api_key: str,
        replica_id: str,
        audio_url_for: AudioPublisher,
        *,
        poll_interval: float,
    ) -> None:
        self._http = VendorHttp(
            self.name, api_url or DEFAULT_URL, api_key, {"x-api-key": api_key}, poll_interval=poll_interval
        )
        self._replica_id = replica_id
        self._audio_url_for = audio_url_for

    def render(
        self,
        audio: np.ndarray,
        sample_rate: int,
        *,
        deadline: float,
        cancelled: threading.Event | None = None,
    ) -> Path:
        http = self._http
        try:
            wav = encode_wav(audio, sample_rate)
        except ValueError as exc:
            raise http.error(str(exc), "failed") from None
        http.check(deadline, cancelled, "publish the audio")
        try:
            audio_url = self._audio_url_for(wav)
        except Exception as exc:  # the publisher is the operator's: any failure is "unavailable"
            raise http.error(f"cannot publish the audio for Tavus: {exc}", "unavailable") from None
        video = http.call(
            "POST", "/v2/videos",
            json={"replica_id": self._replica_id, "audio_url": audio_url, "video_name": "poc speech"},
            deadline=deadline, cancelled=cancelled, what="create the video",
        )  # fmt: skip
        video_id = text_field(video, "video_id")
        if not video_id:
            raise http.error("answered the new video without a video_id", "failed")
        download_url = http.poll(
            f"/v2/videos/{video_id}", self._check, deadline=deadline, cancelled=cancelled,
            what=f"finish video {video_id}",
        )  # fmt: skip
        return http.download(download_url, deadline=deadline, cancelled=cancelled)

    def close(self) -> None:
        self._http.close()

    def _check(self, video: Mapping[str, Any]) -> str | None:
        status = text_field(video, "status")
        if status == "ready":
            # hosted_url is a web page to watch it, stream_url an HLS playlist: only
            # download_url is the file itself.
            url = text_field(video, "download_url")
            if not url:
                raise self._http.error("video is ready but has no download_url", "failed")
            return url
        if status in FAILED:
            said = self._http.detail({"status_details": video.get("status_details")})
            raise self._http.error(f"video ended with status {status!r}: {said}", "failed")
        if status in WORKING:
            return None
        raise self._http.error(f"video has an unknown status {status!r}", "failed")
