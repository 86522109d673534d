"""The compositor: what goes on air at each frame of the media clock.

Called once per tick with the frame number k, it returns the picture and exactly the samples
that belong to frame k. It never waits for a producer: if the head segment has audio for k the
audio plays; if the face for k has not been rendered yet the last talking face is held (briefly,
then the idle face is substituted) and the frame is counted as an underrun. Idle is the idle
frame of the same frame number plus silence, through the same path.

The compositor also fires the statechart's media events at exact frame boundaries: speech
starting (frames_ready), the mouth blend completing (blend_finished), speech ending
(speech_finished / interrupted / failed). The mouth weight ramps 0→1 and 1→0 over
`blend_frames` frames while the chart is TRANSITIONING.
"""

from __future__ import annotations

import time
from typing import Callable

import cv2
import numpy as np

from poc.face.avatar import Avatar
from poc.face.base import FacePatch
from poc.jobs import Job, Outcome
from poc.media.audio import fade_out, samples_in_frame, silence
from poc.media.timeline import Schedule, Segment
from poc.ops.metrics import Metrics
from poc.statechart import StreamChart

_NOT_RENDERED = object()


class Compositor:
    def __init__(
        self,
        avatar: Avatar,
        chart: StreamChart,
        schedule: Schedule,
        sample_rate: int,
        fps: int,
        metrics: Metrics,
        blend_frames: int = 4,
        hold_frames: int = 6,
        on_started: Callable[[Job], None] = lambda job: None,
        on_settled: Callable[[Job], None] = lambda job: None,
    ) -> None:
        self.avatar = avatar
        self.chart = chart
        self.schedule = schedule
        self.sample_rate = sample_rate
        self.fps = fps
        self.metrics = metrics
        self.blend_frames = max(1, blend_frames)
        self.hold_frames = hold_frames
        self._on_started = on_started
        self._on_settled = on_settled
        self.frame = 0  # the next frame number to render
        self.mouth_weight = 0.0
        self._last_patch: FacePatch | None = None
        self._held = 0
        self.underruns = 0
        self.audio_underruns = 0

    # -- the per-tick work ------------------------------------------------------------------

    def render(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Picture (HxWx3 uint8 BGR) and audio (int16, samples_in_frame(k)) for frame k."""
        self.frame = k + 1
        patch, audio = self._speech_for(k)
        self._advance_blend()
        picture = self.avatar.frame_at(k)
        if patch is not None and self.mouth_weight > 0.0:
            picture = self._paste(picture, patch, self.mouth_weight)
        return picture, audio

    def _speech_for(self, k: int) -> tuple[FacePatch | None, np.ndarray]:
        quiet = silence(samples_in_frame(k, self.sample_rate, self.fps))
        segment = self._current_segment(k)
        if segment is None:
            return self._last_patch if self.chart.state_id == "transitioning" else None, quiet
        if segment.stop_at is not None and k >= segment.stop_at:
            self._end(segment, k, "interrupted", segment.stop_outcome)
            audio = segment.audio[k - segment.start] if k < segment.end else quiet
            return self._last_patch, fade_out(audio) if k == segment.stop_at else quiet
        if k >= segment.end:
            if segment.complete:
                self._end(segment, k, "failed" if segment.failure else "speech_finished")
                return self._last_patch, quiet
            self.audio_underruns += 1  # speech not arrived yet: silence, hold the face
            self.metrics.audio_underruns.inc()
            return self._hold(), quiet
        patch = segment.patches.get(k, _NOT_RENDERED)
        if patch is _NOT_RENDERED:
            return self._hold(), segment.audio[k - segment.start]
        self._held = 0
        self._last_patch = patch  # type: ignore[assignment]
        return patch, segment.audio[k - segment.start]  # type: ignore[return-value]

    def _current_segment(self, k: int) -> Segment | None:
        """The segment on air at k, starting it (and firing frames_ready) when its time comes."""
        while (head := self.schedule.head()) is not None and not head.playing and head.job.is_settled:
            self.schedule.pop_head()  # dropped before it started (clear, failure)
        head = self.schedule.head()
        if head is None or (not head.playing and k < head.start):
            return None
        if not head.playing:
            if self.chart.state_id == "transitioning":
                # the previous message is still blending out: finish that blend now, so this
                # message starts exactly on its frame (its audio is laid onto frame numbers)
                self.mouth_weight = 0.0
                self.chart.send("blend_finished")
            if self.chart.state_id == "idle":
                self.chart.send("message_accepted")
            head.playing = True
            head.job.on_air_at = time.monotonic()
            self.chart.send("frames_ready")
            self._last_patch = None
            self._on_started(head.job)
        return head

    def _hold(self) -> FacePatch | None:
        self.underruns += 1
        self.metrics.underruns.inc()
        self._held += 1
        return self._last_patch if self._held <= self.hold_frames else None

    def _end(self, segment: Segment, k: int, event: str, outcome_name: str = "") -> None:
        self.schedule.pop_head()
        outcome = Outcome(outcome_name) if outcome_name else {
            "speech_finished": Outcome.PLAYED,
            "failed": Outcome.DEAD_LETTERED,
        }[event]
        reason = segment.failure or ("cut short by a shutdown" if outcome is Outcome.REQUEUED else "")
        if segment.job.settle(outcome, reason):
            self._on_settled(segment.job)
        self.chart.send(event)

    def _advance_blend(self) -> None:
        state = self.chart.state_id
        if state == "transitioning":
            step = self.chart.blend_direction / self.blend_frames
            self.mouth_weight = min(1.0, max(0.0, self.mouth_weight + step))
            if self.mouth_weight in (0.0, 1.0):
                self.chart.send("blend_finished")
                if self.chart.state_id != "talking":
                    self._last_patch = None
        elif state == "talking":
            self.mouth_weight = 1.0
        else:
            self.mouth_weight = 0.0

    # -- control (called on the event loop between ticks) -------------------------------------

    def interrupt(self, outcome: Outcome = Outcome.INTERRUPTED) -> Job | None:
        """Stop the speech on air at the next frame (its audio fades over that frame)."""
        head = self.schedule.head()
        if head is None or not head.playing or head.stop_at is not None:
            return None
        head.stop_at = self.frame
        head.stop_outcome = outcome.value
        return head.job

    def seconds_left(self) -> float | None:
        """Speech left in the message on air (None if nothing plays or its end is unknown)."""
        head = self.schedule.head()
        if head is None or not head.playing or not head.complete:
            return None
        return max(0, head.end - self.frame) / self.fps

    @staticmethod
    def _paste(picture: np.ndarray, patch: FacePatch, weight: float) -> np.ndarray:
        out = picture.copy()
        y, x, h, w = patch.y, patch.x, patch.height, patch.width
        region = out[y : y + h, x : x + w]
        if weight >= 1.0:
            region[...] = patch.pixels
        else:
            cv2.addWeighted(patch.pixels, weight, region, 1.0 - weight, 0.0, dst=region)
        return out
