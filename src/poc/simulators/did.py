"""A local D-ID: the Talks API as docs.d-id.com documents it, with real mp4 results.

Endpoints: POST /audios and POST /images (multipart, fields `audio` / `image`; answer 201 with
an `s3://` url D-ID resolves itself), POST /talks (`source_url`, `script` {type "audio",
audio_url}; 201 with `id` and status "created"), GET /talks/{id} (status "created" ->
"started" -> "done" with `result_url`, or "error" with `error` {kind, description}), and the
result file under /results/ (a pre-signed storage link in real life: no key needed).
Auth: `Authorization: Basic <key>`, the key as D-ID Studio shows it; anything else is 401
{kind: "AuthorizationError"}. Errors are {kind, description}, as D-ID answers them.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from poc.simulators.base import Request
from poc.simulators.faces import FaceVendorServer, json_object, multipart_files, wav_duration

_KINDS = {400: "ValidationError", 401: "AuthorizationError", 404: "NotFoundError", 429: "TooManyRequestsError"}


class DIdServer(FaceVendorServer):
    def __init__(self, api_key: str = "c2ltQGV4YW1wbGUuY29t:sim-secret", *, polls_to_finish: int = 3) -> None:
        super().__init__(api_key, polls_to_finish=polls_to_finish)
        self.audios: dict[str, bytes] = {}  # s3 url -> uploaded bytes
        self.images: dict[str, bytes] = {}

    def authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Basic {self.api_key}"

    def send_error(
        self, request: Request, status: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        kind = _KINDS.get(status, "InternalServerError" if status >= 500 else "UnknownError")
        request.send_json(status, {"kind": kind, "description": message}, headers)

    def _upload(self, request: Request, field: str, bucket: str, store: dict[str, bytes]) -> None:
        if self.refused(request):
            return
        part = multipart_files(request.recorded).get(field)
        if part is None or not part[1]:
            self.send_error(request, 400, f"multipart field {field!r} is required")
            return
        upload_id = self.new_id()
        url = f"s3://{bucket}/sim-user/{upload_id}/{part[0] or field}"
        store[url] = part[1]
        answer = {"id": upload_id, "url": url}
        if field == "audio":
            try:
                answer["duration"] = wav_duration(part[1])
            except ValueError:
                self.send_error(request, 400, "audio is not a supported file")
                return
        request.send_json(201, answer)

    def post_audio(self, request: Request, match: re.Match[str]) -> None:
        self._upload(request, "audio", "d-id-audios-sim", self.audios)

    def post_image(self, request: Request, match: re.Match[str]) -> None:
        self._upload(request, "image", "d-id-images-sim", self.images)

    def post_talk(self, request: Request, match: re.Match[str]) -> None:
        if self.refused(request):
            return
        body = json_object(request)
        script = body.get("script") if body else None
        if not body or not isinstance(body.get("source_url"), str) or not body["source_url"]:
            self.send_error(request, 400, "source_url is required")
            return
        if not isinstance(script, dict) or script.get("type") != "audio":
            self.send_error(request, 400, "script must be an audio script")
            return
        audio_url = script.get("audio_url")
        if audio_url not in self.audios:
            self.send_error(request, 400, "audio_url cannot be fetched")
            return
        talk_id = self.new_id("tlk_")
        self.start_job(talk_id, self.audios[audio_url])
        request.send_json(
            201, {"id": talk_id, "object": "talk", "status": "created", "created_at": _now()}
        )

    def get_talk(self, request: Request, match: re.Match[str]) -> None:
        if self.refused(request):
            return
        job = self.jobs.get(match["id"])
        if job is None:
            self.send_error(request, 404, "talk not found")
            return
        state = job.poll()
        talk = {"id": job.id, "object": "talk", "created_at": _now(), "config": {"result_format": "mp4"}}
        if state == "done":
            talk.update(status="done", result_url=self.result_url(job))
        elif state == "failed":
            talk.update(status="error", error={"kind": "FaceError", "description": "simulated: no face found"})
        else:
            talk["status"] = "created" if job.polls <= 1 else "started"
        request.send_json(200, talk)

    def get_result(self, request: Request, match: re.Match[str]) -> None:
        self.serve_result(request, match["id"])

    routes = [
        ("POST", r"/audios", post_audio),
        ("POST", r"/images", post_image),
        ("POST", r"/talks", post_talk),
        ("GET", r"/talks/(?P<id>[\w-]+)", get_talk),
        ("GET", r"/results/(?P<id>[\w-]+)\.mp4", get_result),
    ]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
