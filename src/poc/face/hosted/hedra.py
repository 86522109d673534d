"""Hedra's public API: an image asset and an audio asset in, a lip-synced avatar video out.

Documented flow (hedra.com/docs, "Generate avatar video"; base .../web-app/public): create an
audio asset (POST /assets {name, type: "audio"}), upload its bytes (POST /assets/{id}/upload,
multipart field `file`), create a video generation (POST /generations with the Hedra Avatar
model, `start_keyframe_id` = the image asset, `audio_id` = the audio asset), poll
GET /generations/{id}/status through "queued"/"pending"/"processing"/"finalizing" until
"complete" (with `download_url`/`url`) or "error" (with `error_message`), then download.
Auth: the `X-API-Key` header. No official Python SDK exists, so this is httpx against that API.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from poc.face.hosted.http import JobStatus, VendorHttp, image_mime, text_field

DEFAULT_URL = "https://api.hedra.com/web-app/public"
AVATAR_MODEL_ID = "26f0fc66-152b-40ab-abed-76c43df99bc8"  # "Hedra Avatar": talking heads, lip-sync
WORKING = ("queued", "pending", "processing", "finalizing")


class HedraClient:
    name = "hedra"

    def __init__(
        self,
        api_url: str | None,
        api_key: str,
        avatar_id: str | None,
        avatar_image: Path | None,
        *,
        poll_interval: float,
        resolution: str = "720p",
        aspect_ratio: str = "16:9",  # the stream's shape; the frames are fitted either way
    ) -> None:
        self._http = VendorHttp(
            self.name, api_url or DEFAULT_URL, api_key, {"X-API-Key": api_key}, poll_interval=poll_interval
        )
        self._status = JobStatus(
            self._http, "generation", done="complete", url_fields=("download_url", "url"),
            working=WORKING, failed=("error",),
            detail=lambda generation: {"error_message": generation.get("error_message")},
        )
        self._image_id = avatar_id or None  # uploaded lazily from avatar_image when None
        self._avatar_image = avatar_image
        self._resolution = resolution
        self._aspect_ratio = aspect_ratio
        self._lock = threading.Lock()

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
        image_id = self._image(deadline, cancelled)
        audio_id = self._asset("audio", "speech.wav", wav, "audio/wav", deadline, cancelled)
        generation = http.call(
            "POST", "/generations",
            json={
                "type": "video",
                "ai_model_id": AVATAR_MODEL_ID,
                "start_keyframe_id": image_id,
                "audio_id": audio_id,
                "generated_video_inputs": {
                    "text_prompt": "A person speaking to the camera",
                    "resolution": self._resolution,
                    "aspect_ratio": self._aspect_ratio,
                    "duration_ms": round(len(audio) * 1000 / sample_rate),
                },
            },
            deadline=deadline, cancelled=cancelled, what="create the generation",
        )  # fmt: skip
        generation_id = http.new_id(generation, "id", "generation")
        return http.finish(
            f"/generations/{generation_id}/status", self._status, deadline=deadline,
            cancelled=cancelled, what=f"finish generation {generation_id}",
        )  # fmt: skip

    def close(self) -> None:
        self._http.close()

    def _image(self, deadline: float, cancelled: threading.Event | None) -> str:
        """The start keyframe: the configured image asset, else our avatar uploaded once."""
        with self._lock:
            if self._image_id is None:
                assert self._avatar_image is not None  # create_client checked
                path = self._avatar_image
                self._image_id = self._asset(
                    "image", path.name, path.read_bytes(), image_mime(path), deadline, cancelled
                )
            return self._image_id

    def _asset(
        self, kind: str, name: str, data: bytes, mime: str, deadline: float, cancelled: threading.Event | None
    ) -> str:
        created = self._http.call(
            "POST", "/assets", json={"name": name, "type": kind},
            deadline=deadline, cancelled=cancelled, what=f"create the {kind} asset",
        )  # fmt: skip
        asset_id = text_field(created, "id")
        if not asset_id:
            raise self._http.error(f"answered the new {kind} asset without an id", "failed")
        self._http.call(
            "POST", f"/assets/{asset_id}/upload", files={"file": (name, data, mime)},
            deadline=deadline, cancelled=cancelled, what=f"upload the {kind}",
        )  # fmt: skip
        return asset_id
