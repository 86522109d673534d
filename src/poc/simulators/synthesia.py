"""A local Synthesia: script audio upload and video creation as docs.synthesia.io documents them,
with real mp4 results.

Endpoints: POST /v2/scriptAudio (the Upload API's, which Synthesia serves on its own host: here
the same server; the MP3 itself as the body, `Content-Type: audio/mpeg`; answers its `id`), POST
/v2/videos (`input`: clips, each with `avatar` and `background`, and `scriptAudio` = an uploaded
id with its `scriptLanguage`, or `scriptText`; answers the video with `id`, status
"in_progress"), GET /v2/videos/{id} (status "in_progress" -> "complete" with `download`, or
"error"), and the result file under /results/. Auth: the `Authorization` header holding the key
itself; a missing or wrong one is 403 {error}, as documented. Errors are {error, context}. What
was uploaded, decoded, is in `script_audio` (id -> WAV bytes).
"""

from __future__ import annotations

import io
import re
import time
from typing import Any

import numpy as np
import soundfile

from poc.simulators.base import Request
from poc.simulators.faces import FaceVendorServer, json_object


class SynthesiaServer(FaceVendorServer):
    unauthorized = (403, "Forbidden - Wrong API key")  # Synthesia's documented answer to a bad key

    def __init__(self, api_key: str = "sim-synthesia-key", *, polls_to_finish: int = 3) -> None:
        super().__init__(api_key, polls_to_finish=polls_to_finish)
        self.script_audio: dict[str, bytes] = {}  # id -> the upload, decoded to WAV
        self.videos: dict[str, dict[str, Any]] = {}  # id -> the create request's body

    def authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == self.api_key

    def send_error(
        self, request: Request, status: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        request.send_json(status, {"error": message, "context": "simulated Synthesia"}, headers)

    def post_script_audio(self, request: Request, match: re.Match[str]) -> None:
        if self.refused(request):
            return
        if request.headers.get("content-type", "").split(";")[0].strip() != "audio/mpeg":
            self.send_error(request, 400, "script audio must be sent as audio/mpeg")
            return
        try:
            samples, rate = soundfile.read(io.BytesIO(request.recorded.body), dtype="int16")
            if soundfile.info(io.BytesIO(request.recorded.body)).format != "MP3" or not len(samples):
                raise ValueError("not an MP3")
        except (soundfile.LibsndfileError, ValueError, RuntimeError):
            self.send_error(request, 400, "script audio could not be read as MP3")
            return
        audio_id = self.new_id("audio-")
        self.script_audio[audio_id] = _wav(np.asarray(samples).reshape(len(samples), -1)[:, 0], rate)
        request.send_json(201, {"id": audio_id})

    def post_video(self, request: Request, match: re.Match[str]) -> None:
        if self.refused(request):
            return
        body = json_object(request)
        clips = body.get("input") if body else None
        problem = None
        if not isinstance(clips, list) or not clips:
            problem = "input must be a list of clips"
        else:
            for clip in clips:
                problem = _clip_problem(clip, self.script_audio)
                if problem:
                    break
        if problem or body is None:
            self.send_error(request, 400, problem or "body must be a JSON object")
            return
        video_id = self.new_id("v-")
        self.start_job(video_id, self.script_audio.get(str(clips[0].get("scriptAudio"))))
        self.videos[video_id] = body
        request.send_json(200, self._video(video_id, "in_progress"))

    def get_video(self, request: Request, match: re.Match[str]) -> None:
        if self.refused(request):
            return
        job = self.jobs.get(match["id"])
        if job is None:
            self.send_error(request, 404, "Video ID was not found.")
            return
        state = job.poll()
        if state == "done":
            video = self._video(job.id, "complete", download=self.result_url(job))
        else:
            video = self._video(job.id, "error" if state == "failed" else "in_progress")
        request.send_json(200, video)

    def get_result(self, request: Request, match: re.Match[str]) -> None:
        self.serve_result(request, match["id"])

    def _video(self, video_id: str, status: str, download: str | None = None) -> dict[str, Any]:
        body = self.videos.get(video_id, {})
        video = {
            "id": video_id,
            "title": body.get("title", ""),
            "visibility": body.get("visibility", "private"),
            "input": body.get("input", []),
            "status": status,
            "createdAt": int(time.time()),
            "lastUpdatedAt": int(time.time()),
        }
        if download:
            video["download"] = download
        return video

    routes = [
        ("POST", r"/v2/scriptAudio", post_script_audio),
        ("POST", r"/v2/videos", post_video),
        ("GET", r"/v2/videos/(?P<id>[\w-]+)", get_video),
        ("GET", r"/results/(?P<id>[\w-]+)\.mp4", get_result),
    ]


def _clip_problem(clip: Any, script_audio: dict[str, bytes]) -> str | None:
    """What is wrong with one clip of a create request, as Synthesia's 400 says it; None if fine."""
    if not isinstance(clip, dict):
        return "each clip must be an object"
    for field in ("avatar", "background"):
        if not isinstance(clip.get(field), str) or not clip[field]:
            return f"input[].{field} is required"
    if "scriptAudio" in clip:
        if clip["scriptAudio"] not in script_audio:
            return "input[].scriptAudio is not an uploaded script audio"
        if not clip.get("scriptLanguage"):
            return "input[].scriptLanguage is required with scriptAudio"
    elif not clip.get("scriptText"):
        return "input[].scriptText or scriptAudio is required"
    return None


def _wav(samples: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()
