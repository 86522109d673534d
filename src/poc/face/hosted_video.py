"""A hosted face API (D-ID, Tavus, Hedra, Synthesia) as the pipeline uses it: one video per message, with
the local engine as the safety net.

The vendor gets the whole utterance and answers with a video seconds to minutes later, so the
pipeline asks here once the message's speech is complete (the stream stays on the idle avatar,
in PROCESSING). When the vendor fails, is cancelled or runs past TALKING_FACE_API_TIMEOUT_SECONDS,
`video_for` says so with None after one log line and a count, and the pipeline speaks the words
with the local engine: a vendor outage never loses a message.

The video's frames are read lazily (face/hosted/video.py: fitted like the avatar, retimed to the
stream's rate), so only the frames near the clock are ever in memory. A video a little shorter
than the speech holds its last frame; one more than SHORT_TOLERANCE_S shorter is refused (the
vendor's face would freeze while the voice goes on), and the local engine speaks instead. A
longer one is cut where the speech ends.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np

from poc.face.hosted.base import HostedFaceClient, HostedFaceError
from poc.face.hosted.video import iter_video, video_seconds
from poc.metrics import Metrics

log = logging.getLogger(__name__)

SHORT_TOLERANCE_S = 0.25  # a vendor's video may end this much before our speech (its last frame holds)


class HostedFace:
    def __init__(
        self,
        client: HostedFaceClient,
        *,
        timeout_s: float,
        width: int,
        height: int,
        fps: int,
        metrics: Metrics,
    ) -> None:
        self.client = client
        self.name = client.name
        self.timeout_s = timeout_s
        self.width, self.height, self.fps = width, height, fps
        self._metrics = metrics

    def video_for(
        self, audio: np.ndarray, sample_rate: int, cancelled: threading.Event | None = None
    ) -> Path | None:
        """The vendor's video of the avatar saying `audio`, or None when the local engine must
        speak instead (logged and counted here). Blocking: run it in a worker thread."""
        started = time.monotonic()
        self._metrics.face_api_requests.labels(vendor=self.name).inc()
        try:
            path = self.client.render(
                audio, sample_rate, deadline=started + self.timeout_s, cancelled=cancelled
            )
        except HostedFaceError as error:
            if error.kind != "cancelled":
                self._metrics.face_api_failures.labels(vendor=self.name, kind=error.kind).inc()
                log.warning("%s; the local engine speaks this message", error)
            return None
        except Exception as error:  # a bug in a vendor client must not lose the words
            self._metrics.face_api_failures.labels(vendor=self.name, kind="error").inc()
            log.exception("%s client crashed (%s); the local engine speaks this message", self.name, error)
            return None
        self._metrics.face_api_seconds.labels(vendor=self.name).observe(time.monotonic() - started)
        return path

    def open_video(self, path: Path, speech_seconds: float) -> VendorVideo | None:
        """The video's frames, or None (logged and counted) when it does not decode or ends
        well before the `speech_seconds` it is to be shown with."""
        try:
            video = VendorVideo(path, self.width, self.height, self.fps)
        except HostedFaceError as error:
            self._metrics.face_api_failures.labels(vendor=self.name, kind=error.kind).inc()
            log.warning("%s sent a video that does not decode (%s); the local engine speaks this message", self.name, error)
            return None
        if video.seconds is not None and speech_seconds - video.seconds > SHORT_TOLERANCE_S:
            video.close()
            self._metrics.face_api_failures.labels(vendor=self.name, kind="bad_video").inc()
            log.warning(
                "%s sent a %.2f s video for %.2f s of speech (its face would freeze for the rest); "
                "the local engine speaks this message", self.name, video.seconds, speech_seconds,
            )  # fmt: skip
            return None
        return video

    def close(self) -> None:
        self.client.close()


class VendorVideo:
    """A downloaded video's frames at the stream's size and rate, read on demand (frame indices
    never go back). Past its end the last frame is held."""

    def __init__(self, path: Path, width: int, height: int, fps: int) -> None:
        self.path = path
        self._frames = iter_video(path, width, height, fps)
        self._current = next(self._frames)  # raises HostedFaceError("bad_video") right here
        self.seconds = video_seconds(path)  # None when its container does not say
        self._index = 0

    def frame(self, index: int) -> np.ndarray:
        while self._index < index:
            following = next(self._frames, None)
            if following is None:
                break
            self._current, self._index = following, self._index + 1
        return self._current

    def close(self) -> None:
        self._frames.close()
