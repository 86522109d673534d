"""Synthesia's video API: a stock avatar and our audio in, a rendered video of the avatar out.

Documented flow (docs.synthesia.io, API v2, base https://api.synthesia.io): upload the speech
as script audio to the Upload API (POST https://upload.api.synthesia.io/v2/scriptAudio, the MP3
itself as the body with `Content-Type: audio/mpeg`; the answer's `id` names it), create a video
(POST /v2/videos with one clip in `input`: `avatar` = a stock or custom avatar id, `background`,
`scriptAudio` = the uploaded id in place of `scriptText`, and `scriptLanguage`, which
`scriptAudio` requires), poll GET /v2/videos/{id} through "in_progress" until "complete" (with
`download`, a time-limited link to the file) or "error"/"rejected" (moderation)/"deleted", then
download it. The documented status list also holds "approved", which carries no file: it is
read as still working. Auth: the `Authorization` header holding the API key itself (no scheme);
a wrong key is 403 in the older pages, 401 `unauthenticated` in the errors page (both are a
rejected key here). Errors are {error, context}, or RFC 9457 Problem Details ({code, title,
detail}) in the errors page: `detail` or `error` is quoted. Create video is rate-limited
(60 a minute, 300 an hour, 1000 a day at the documented tier; 429 past that). No official
Python SDK exists, so this is httpx against that REST API.

What it means for poc: Synthesia renders a whole video, typically in minutes, and the hosted
stage waits at most TALKING_FACE_API_TIMEOUT_SECONDS before the local engine speaks the words,
so it suits messages sent with a long lead (pre-produced clips) rather than a live reply.
A video given up on (late, cancelled, or its create call unanswered in time) is neither
cancelled nor deleted: it renders on in Synthesia and counts against the plan's minutes.
Avatars are chosen by id: the API has no way to make an avatar from our image (custom avatars
are made in Synthesia STUDIO; the API's media assets are backgrounds and dubbing sources), so
TALKING_FACE_AVATAR_ID is required. One TALKING_FACE_API_URL (a proxy, the simulator) serves
both hosts; unset, each is Synthesia's own.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from poc.face.hosted.http import JobStatus, VendorHttp, text_field
from poc.face.hosted.wav import encode_mp3

DEFAULT_URL = "https://api.synthesia.io"
DEFAULT_UPLOAD_URL = "https://upload.api.synthesia.io"
WORKING = ("in_progress", "approved")
FAILED = ("error", "rejected", "deleted")
# A video's status says nothing of why it failed: say what the status itself means.
REASONS = {
    "error": "Synthesia gives no reason (the video in Synthesia STUDIO may)",
    "rejected": "refused by Synthesia's moderation",
    "deleted": "the video was deleted",
}
BACKGROUND = "off_white"  # a plain stock background: the stream fits the whole frame anyway
DEFAULT_LANGUAGE = "en-US"  # poc's default voice (piper's en_US) when TTS_LANGUAGE is empty


class SynthesiaClient:
    name = "synthesia"

    def __init__(
        self,
        api_url: str | None,
        api_key: str,
        avatar_id: str,
        *,
        poll_interval: float,
        language: str | None = None,
        aspect_ratio: str = "16:9",  # the stream's shape; the frames are fitted either way
    ) -> None:
        self._http = VendorHttp(
            self.name, api_url or DEFAULT_URL, api_key, {"Authorization": api_key}, poll_interval=poll_interval
        )
        self._upload_url = (api_url or DEFAULT_UPLOAD_URL).rstrip("/")
        self._status = JobStatus(
            self._http, "video", done="complete", url_fields=("download",), working=WORKING, failed=FAILED,
            detail=lambda video: REASONS.get(text_field(video, "status"), ""),
        )  # fmt: skip
        self._avatar_id = avatar_id
        self._language = script_language(language)
        self._aspect_ratio = aspect_ratio

    def render(
        self,
        audio: np.ndarray,
        sample_rate: int,
        *,
        deadline: float,
        cancelled: threading.Event | None = None,
    ) -> Path:
        http = self._http
        mp3 = http.speech_file(audio, sample_rate, encode=encode_mp3)
        uploaded = http.call(
            "POST", f"{self._upload_url}/v2/scriptAudio", content=(mp3, "audio/mpeg"),
            deadline=deadline, cancelled=cancelled, what="upload the script audio",
        )  # fmt: skip
        audio_id = http.new_id(uploaded, "id", "script audio")
        video = http.call(
            "POST", "/v2/videos",
            json={
                "title": "poc speech",
                "visibility": "private",  # downloaded through the time-limited link only
                "aspectRatio": self._aspect_ratio,
                "input": [{
                    "avatar": self._avatar_id,
                    "background": BACKGROUND,
                    "scriptAudio": audio_id,
                    "scriptLanguage": self._language,
                }],
            },
            deadline=deadline, cancelled=cancelled, what="create the video",
        )  # fmt: skip
        video_id = http.new_id(video, "id", "video")
        return http.finish(
            f"/v2/videos/{video_id}", self._status, deadline=deadline, cancelled=cancelled,
            what=f"finish video {video_id}",
        )  # fmt: skip

    def close(self) -> None:
        self._http.close()


def script_language(language: str | None) -> str:
    """TTS_LANGUAGE as Synthesia writes a language ("en_us" -> "en-US"); empty: DEFAULT_LANGUAGE.
    Synthesia refuses one it does not know when the video is created (the local engine speaks)."""
    if not language or not language.strip():
        return DEFAULT_LANGUAGE
    parts = language.strip().replace("_", "-").split("-")
    if len(parts) == 2 and len(parts[1]) == 2:
        return f"{parts[0].lower()}-{parts[1].upper()}"
    return language.strip()
