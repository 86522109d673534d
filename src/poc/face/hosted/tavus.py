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
from pathlib import Path

import numpy as np

from poc.face.hosted.base import AudioPublisher
from poc.face.hosted.http import JobStatus, VendorHttp

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
        # hosted_url is a web page to watch it, stream_url an HLS playlist: only download_url
        # is the file itself.
        self._status = JobStatus(
            self._http, "video", done="ready", url_fields=("download_url",), working=WORKING, failed=FAILED,
            detail=lambda video: {"status_details": video.get("status_details")},
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
        wav = http.speech_file(audio, sample_rate)
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
        video_id = http.new_id(video, "video_id", "video")
        return http.finish(
            f"/v2/videos/{video_id}", self._status, deadline=deadline, cancelled=cancelled,
            what=f"finish video {video_id}",
        )  # fmt: skip

    def close(self) -> None:
        self._http.close()
