"""A local Hedra: the public API's asset and generation flow, with real mp4 results.

Endpoints under /web-app/public (as api.hedra.com serves them): POST /assets ({name, type};
answers the asset with its `id`), POST /assets/{id}/upload (multipart field `file`), POST
/generations (type "video", `ai_model_id`, `start_keyframe_id` = an image asset, `audio_id` =
an uploaded audio asset, `generated_video_inputs` with `text_prompt`; answers `id`,
`asset_id`), GET /generations/{id}/status (status "queued" -> "processing" -> "finalizing" ->
"complete" with `url`/`download_url`, or "error" with `error_message`), and the result file
under /results/. `avatar_asset_id` is an image asset that exists from the start (what
TALKING_FACE_AVATAR_ID names). Auth: the `X-API-Key` header; anything else is 401 {detail}.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from typing import Any

from poc.simulators.base import Request
from poc.simulators.faces import FaceVendorServer, json_object, multipart_files, wav_duration

PREFIX = "/web-app/public"
_WORKING = ("queued", "pending", "processing", "finalizing")


class HedraServer(FaceVendorServer):
    def __init__(self, api_key: str = "sim-hedra-key", *, polls_to_finish: int = 4) -> None:
        super().__init__(api_key, polls_to_finish=polls_to_finish)
        self.avatar_asset_id = str(uuid.uuid4())
        self.assets: dict[str, dict[str, Any]] = {
            self.avatar_asset_id: {"id": self.avatar_asset_id, "type": "image", "name": "avatar.png", "data": b"x"}
        }
        self.generation_assets: dict[str, str] = {}  # generation id -> its video asset id

    @property
    def api_url(self) -> str:
        return f"{self.url}{PREFIX}"

    def authorized(self, request: Request) -> bool:
        return request.headers.get("x-api-key") == self.api_key

    def send_error(
        self, request: Request, status: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        request.send_json(status, {"detail": message}, headers)

    def post_asset(self, request: Request, match: re.Match[str]) -> None:
        if self.refused(request):
            return
        body = json_object(request)
        if not body or body.get("type") not in ("image", "audio", "video") or not body.get("name"):
            self.send_error(request, 422, "name and type (image, audio, video) are required")
            return
        asset_id = str(uuid.uuid4())
        self.assets[asset_id] = {"id": asset_id, "type": body["type"], "name": body["name"], "data": None}
        request.send_json(200, _asset_view(self.assets[asset_id]))

    def upload_asset(self, request: Request, match: re.Match[str]) -> None:
        if self.refused(request):
            return
        asset = self.assets.get(match["id"])
        if asset is None:
            self.send_error(request, 404, "asset not found")
            return
        part = multipart_files(request.recorded).get("file")
        if part is None or not part[1]:
            self.send_error(request, 422, "multipart field 'file' is required")
            return
        if asset["type"] == "audio":
            try:
                wav_duration(part[1])
            except ValueError:
                self.send_error(request, 422, "audio file could not be read")
                return
        asset["data"] = part[1]
        request.send_json(200, _asset_view(asset, f"{self.url}/assets/{asset['id']}"))

    def post_generation(self, request: Request, match: re.Match[str]) -> None:
        if self.refused(request):
            return
        body = json_object(request) or {}
        image = self.assets.get(str(body.get("start_keyframe_id")))
        audio = self.assets.get(str(body.get("audio_id")))
        inputs = body.get("generated_video_inputs")
        problem = None
        if body.get("type") != "video" or not body.get("ai_model_id"):
            problem = "type 'video' and ai_model_id are required"
        elif not isinstance(inputs, dict) or not inputs.get("text_prompt"):
            problem = "generated_video_inputs.text_prompt is required"
        elif image is None or image["type"] != "image" or not image["data"]:
            problem = "start_keyframe_id must be an uploaded image asset"
        elif audio is None or audio["type"] != "audio" or not audio["data"]:
            problem = "audio_id must be an uploaded audio asset"
        if problem:
            self.send_error(request, 422, problem)
            return
        generation_id = str(uuid.uuid4())
        self.start_job(generation_id, audio["data"])
        self.generation_assets[generation_id] = str(uuid.uuid4())
        request.send_json(
            200, {**body, "id": generation_id, "asset_id": self.generation_assets[generation_id]}
        )

    def get_status(self, request: Request, match: re.Match[str]) -> None:
        if self.refused(request):
            return
        job = self.jobs.get(match["id"])
        if job is None:
            self.send_error(request, 404, "generation not found")
            return
        state = job.poll()
        status: dict[str, Any] = {
            "id": job.id,
            "asset_id": self.generation_assets[job.id],
            "type": "video",
            "created_at": datetime.now(timezone.utc).isoformat(),
            "error_message": None,
            "url": None,
            "download_url": None,
        }
        if state == "done":
            url = self.result_url(job)
            status.update(status="complete", progress=1.0, url=url, download_url=url)
        elif state == "failed":
            status.update(status="error", progress=0.0, error_message="simulated: generation failed")
        else:
            step = min(job.polls, len(_WORKING)) - 1
            status.update(status=_WORKING[max(0, step)], progress=min(0.9, job.polls * 0.25))
        request.send_json(200, status)

    def get_result(self, request: Request, match: re.Match[str]) -> None:
        self.serve_result(request, match["id"])

    routes = [
        ("POST", PREFIX + r"/assets", post_asset),
        ("POST", PREFIX + r"/assets/(?P<id>[\w-]+)/upload", upload_asset),
        ("POST", PREFIX + r"/generations", post_generation),
        ("GET", PREFIX + r"/generations/(?P<id>[\w-]+)/status", get_status),
        ("GET", r"/results/(?P<id>[\w-]+)\.mp4", get_result),
    ]


def _asset_view(asset: dict[str, Any], url: str | None = None) -> dict[str, Any]:
    view = {k: v for k, v in asset.items() if k != "data"}
    view.update(thumbnail_url="", created_at=datetime.now(timezone.utc).isoformat(), is_favorite=False)
    if url:
        view["asset"] = {"type": f"uploaded_{asset['type']}", "url": url}
    return view
