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
from typing import Callable

import numpy as np

from poc.face.hosted.base import HostedFaceClient, HostedFaceError
from poc.face.hosted.video import iter_video, video_seconds
from poc.metrics import Metrics

log = logging.getLogger(__name__)

SHORT_TOLERANCE_S = 0.25  # a vendor's video may end this much before our speech (its last frame holds)
# A vendor that is down (no answer, 5xx, 429 past the deadline, a key it rejects) costs every
# message up to TALKING_FACE_API_TIMEOUT_SECONDS on the idle avatar before the local engine
# speaks. After this many such failures in a row it rests: the local engine speaks at once, and
# the vendor is asked again after the rest, which doubles with each failed return.
FAILURES_BEFORE_REST = 2
REST_S = (30.0, 60.0, 120.0, 300.0, 600.0)
_VENDOR_DOWN = frozenset({"unavailable", "timeout", "auth"})  # not one job's fault ("failed", "bad_video")


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.name = client.name
        self.timeout_s = timeout_s
        self.width, self.height, self.fps = width, height, fps
        self._metrics = metrics
        self._clock = clock
        self._health = threading.Lock()  # a backlog's requests run side by side, in threads
        self._down_in_a_row = 0
        self._rests = 0  # rests in a row (the next one is REST_S[rests])
        self._resting_until: float | None = None

    def resting_for(self) -> float | None:
        """Seconds until the vendor is asked again after failing repeatedly; None if it is asked."""
        with self._health:
            if self._resting_until is None:
                return None
            left = self._resting_until - self._clock()
            return left if left > 0 else None

    def video_for(
        self, audio: np.ndarray, sample_rate: int, cancelled: threading.Event | None = None
    ) -> Path | None:
        """The vendor's video of the avatar saying `audio`, or None when the local engine must
        speak instead (logged and counted here). Blocking: run it in a worker thread."""
        if self.resting_for() is not None:
            log.debug("%s is resting after failing repeatedly; the local engine speaks this message", self.name)
            return None
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
                self._failed(error)
            return None
        except Exception as error:  # a bug in a vendor client must not lose the words
            self._metrics.face_api_failures.labels(vendor=self.name, kind="error").inc()
            log.exception("%s client crashed (%s); the local engine speaks this message", self.name, error)
            return None
        self._metrics.face_api_seconds.labels(vendor=self.name).observe(time.monotonic() - started)
        self._answered()
        return path

    def _failed(self, error: HostedFaceError) -> None:
        """Count a failure that is the vendor's, not the job's; rest after enough in a row."""
        if error.kind not in _VENDOR_DOWN:
            return
        with self._health:
            if self._resting_until is not None and self._clock() < self._resting_until:
                return  # a request started before the rest began: the rest already counts it
            self._down_in_a_row += 1
            if self._down_in_a_row < FAILURES_BEFORE_REST and self._rests == 0:
                return
            rest = REST_S[min(self._rests, len(REST_S) - 1)]
            self._rests += 1
            self._resting_until = self._clock() + rest
        log.warning(
            "%s failed %d times in a row; the local engine speaks every message for %.0f s, then %s is asked again",
            self.name, self._down_in_a_row, rest, self.name,
        )  # fmt: skip

    def _answered(self) -> None:
        with self._health:
            recovered = self._rests > 0
            self._down_in_a_row, self._rests, self._resting_until = 0, 0, None
        if recovered:
            log.warning("%s answered again: its videos are used again", self.name)

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
