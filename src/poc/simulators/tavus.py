"""A local Tavus: video generation as docs.tavus.io documents it, with real mp4 results.

Endpoints: POST /v2/videos (`replica_id` and `audio_url` or `script`; answers `video_id`,
status "queued", `hosted_url`), GET /v2/videos/{video_id} (status "queued" -> "generating" ->
"ready" with `download_url`/`stream_url`/`hosted_url`, or "error" with `status_details`), and
the result file under /results/. Like Tavus, it downloads `audio_url` itself when the video is
created, so the URL must be reachable from it; what it fetched is in `fetched_audio`.
Auth: the `x-api-key` header; anything else is 401 {message}.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from datetime import datetime, timezone

from poc.simulators.base import Request
from poc.simulators.faces import FaceVendorServer, json_object, wav_duration

FETCH_TIMEOUT_S = 10.0


class TavusServer(FaceVendorServer):
    def __init__(self, api_key: str = "sim-tavus-key", *, polls_to_finish: int = 3) -> None:
        super().__init__(api_key, polls_to_finish=polls_to_finish)
        self.fetched_audio: list[tuple[str, bytes]] = []  # (audio_url, bytes) in creation order

    def authorized(self, request: Request) -> bool:
        return request.headers.get("x-api-key") == self.api_key

    def send_error(
        self, request: Request, status: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        request.send_json(status, {"message": message}, headers)

    def post_video(self, request: Request, match: re.Match[str]) -> None:
        if self.refused(request):
            return
        body = json_object(request)
        if not body or not isinstance(body.get("replica_id"), str) or not body["replica_id"]:
            self.send_error(request, 400, "replica_id is required")
            return
        audio_url = body.get("audio_url")
        if not isinstance(audio_url, str) or not audio_url:
            self.send_error(request, 400, "script or audio_url is required")
            return
        try:
            with urllib.request.urlopen(audio_url, timeout=FETCH_TIMEOUT_S) as answer:  # noqa: S310
                wav = answer.read()
            wav_duration(wav)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self.send_error(request, 400, f"audio_url could not be downloaded as .wav: {exc}")
            return
        self.fetched_audio.append((audio_url, wav))
        video_id = self.new_id("v")
        self.start_job(video_id, wav)
        request.send_json(
            200,
            {
                "video_id": video_id,
                "video_name": body.get("video_name") or f"replica_id: {body['replica_id']} - video: {video_id}",
                "status": "queued",
                "hosted_url": f"{self.url}/video/{video_id}",
                "created_at": _now(),
            },
        )

    def get_video(self, request: Request, match: re.Match[str]) -> None:
        if self.refused(request):
            return
        job = self.jobs.get(match["id"])
        if job is None:
            self.send_error(request, 404, "video not found")
            return
        state = job.poll()
        video = {
            "video_id": job.id,
            "hosted_url": f"{self.url}/video/{job.id}",
            "created_at": _now(),
            "updated_at": _now(),
            "download_url": None,
            "stream_url": None,
        }
        if state == "done":
            video.update(
                status="ready",
                download_url=self.result_url(job),
                stream_url=f"{self.url}/results/{job.id}.m3u8",
                status_details="Your request has processed successfully!",
                generation_progress="100/100",
            )
        elif state == "failed":
            video.update(
                status="error",
                status_details="An error occurred while generating this request (simulated).",
                generation_progress="0/100",
            )
        else:
            video.update(
                status="queued" if job.polls <= 1 else "generating",
                status_details="",
                generation_progress=f"{min(99, job.polls * 30)}/100",
            )
        request.send_json(200, video)

    def get_result(self, request: Request, match: re.Match[str]) -> None:
        self.serve_result(request, match["id"])

    routes = [
        ("POST", r"/v2/videos", post_video),
        ("GET", r"/v2/videos/(?P<id>[\w-]+)", get_video),
        ("GET", r"/results/(?P<id>[\w-]+)\.mp4", get_result),
    ]


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
