"""D-ID's Talks API: a photo and our audio in, a talking-head mp4 out.

Documented flow (docs.d-id.com, "Talks"): upload the audio (POST /audios, multipart field
`audio`; the answer's `url` is an s3:// link D-ID resolves itself), create a talk (POST /talks
with `source_url` = the avatar image and `script` = {type: "audio", audio_url}), poll
GET /talks/{id} through "created"/"started" until "done" (with `result_url`) or
"error"/"rejected", then download `result_url`. Auth: `Authorization: Basic <key>` with the key
exactly as D-ID Studio shows it (API_USERNAME:API_PASSWORD). No official Python SDK exists, so
this is httpx against that REST API.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from poc.face.hosted.http import JobStatus, VendorHttp, image_mime, text_field

DEFAULT_URL = "https://api.d-id.com"
WORKING = ("created", "started")
FAILED = ("error", "rejected")


class DIdClient:
    name = "d-id"

    def __init__(
        self,
        api_url: str | None,
        api_key: str,
        avatar_id: str | None,
        avatar_image: Path | None,
        *,
        poll_interval: float,
    ) -> None:
        self._http = VendorHttp(
            self.name,
            api_url or DEFAULT_URL,
            api_key,
            {"Authorization": f"Basic {api_key}"},
            poll_interval=poll_interval,
        )
        self._status = JobStatus(
            self._http, "talk", done="done", url_fields=("result_url",), working=WORKING, failed=FAILED,
            detail=lambda talk: talk.get("error") or talk,
        )
        self._source_url = avatar_id or None  # uploaded lazily from avatar_image when None
        self._avatar_image = avatar_image
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
        source_url = self._source(deadline, cancelled)
        uploaded = http.call(
            "POST", "/audios", files={"audio": ("speech.wav", wav, "audio/wav")},
            deadline=deadline, cancelled=cancelled, what="upload the audio",
        )  # fmt: skip
        audio_url = text_field(uploaded, "url")
        if not audio_url:
            raise http.error("answered the audio upload without a url", "failed")
        talk = http.call(
            "POST", "/talks",
            json={
                "source_url": source_url,
                "script": {"type": "audio", "audio_url": audio_url},
                "config": {"result_format": "mp4"},
            },
            deadline=deadline, cancelled=cancelled, what="create the talk",
        )  # fmt: skip
        talk_id = http.new_id(talk, "id", "talk")
        return http.finish(
            f"/talks/{talk_id}", self._status, deadline=deadline, cancelled=cancelled,
            what=f"finish talk {talk_id}",
        )  # fmt: skip

    def close(self) -> None:
        self._http.close()

    def _source(self, deadline: float, cancelled: threading.Event | None) -> str:
        """The avatar's source_url: the configured one, else our avatar uploaded once."""
        with self._lock:
            if self._source_url is None:
                assert self._avatar_image is not None  # create_client checked
                image = self._avatar_image.read_bytes()
                uploaded = self._http.call(
                    "POST", "/images",
                    files={"image": (self._avatar_image.name, image, image_mime(self._avatar_image))},
                    deadline=deadline, cancelled=cancelled, what="upload the avatar image",
                )  # fmt: skip
                url = text_field(uploaded, "url")
                if not url:
                    raise self._http.error("answered the image upload without a url", "failed")
                self._source_url = url
            return self._source_url

