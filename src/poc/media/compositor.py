"""The compositor: what goes on air at each frame of the media clock.

Called once per tick with the frame number k, it returns the picture and exactly the samples
that belong to frame k. It never waits for a producer: if the head segment has audio for k the
audio plays; if the face for k has not been rendered yet the last talking face is held (briefly,
then the idle face is substituted) and the frame is counted as an underrun. Idle is the idle
frame of the same frame number plus silence, through the same path.

The compositor also fires the statechart's media events at exact frame boundaries: speech
starting (frames_ready), the blend completing (blend_finished), speech ending (speech_finished /
interrupted / failed). While the chart is TRANSITIONING the talking picture's weight ramps
0→1 (in) or 1→0 (out), one step per frame, in one of two ways:

- the mouth blend (idle and talking share one avatar, the default): only the engine's patch
  rectangle blends over the shared body, over `blend_frames` frames;
- the whole-frame cross-fade, over `transition_frames` frames: when the talking avatar is not
  the idle one (the idle frame k fades into the talking body frame k with the patch on it), or
  when the segment's pictures are its own (`Segment.whole_frames`: full frames from elsewhere).

The length is fixed when a segment starts and holds for both directions, so TRANSITIONING
lasts exactly that many frames each way, plus, going into a mouth blend, the frames spent
waiting for a first mouth that is late (the blend starts when it comes); an interrupt mid-blend
turns back from where it is.
Weights are kept as whole steps (not summed floats) so a blend ends on its exact frame.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import cv2
import numpy as np

from poc.face.avatar import Avatar
from poc.face.base import FacePatch
from poc.face.life import Life
from poc.jobs import Job, Outcome
from poc.media.audio import fade_out, samples_in_frame, silence
from poc.media.timeline import Ending, Schedule, Segment
from poc.metrics import Metrics
from poc.statechart import StreamChart

log = logging.getLogger(__name__)

_NOT_RENDERED = object()

DEFAULT_TRANSITION_SECONDS = 0.3


def transition_frames_for(seconds: float, fps: int) -> int:
    """Frames of a whole-frame cross-fade lasting `seconds` at `fps` (never fewer than one)."""
    return max(1, round(seconds * fps))


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
        on_started: Callable[[Job, int], None] = lambda job, frame: None,
        on_settled: Callable[[Job], None] = lambda job: None,
        *,
        talking_avatar: Avatar | None = None,
        transition_frames: int | None = None,
        life: Life | None = None,
        talking_life: Life | None = None,
    ) -> None:
        """`avatar` is the idle avatar; `talking_avatar` (default: the same object) is the body
        talking faces are drawn on. `transition_frames` (default: 0.3 s) is the length of a
        whole-frame cross-fade; `blend_frames` that of the mouth blend. `on_started(job, k)` is
        called when a job's first frame k is rendered, `on_settled(job)` once the compositor
        has settled a job (played, failed or interrupted), both during the tick.
        `life` (blinks and breath, face/life) is drawn on the idle avatar's pictures and
        `talking_life` on the talking avatar's (default: `life` when the avatar is shared),
        after the mouth, so both carry on through speech and the mouth moves with the head."""
        self.avatar = avatar
        self.talking_avatar = avatar if talking_avatar is None else talking_avatar
        self.life = life or Life.none()
        self.talking_life = talking_life or (self.life if self.talking_avatar is avatar else Life.none())
        self.chart = chart
        self.schedule = schedule
        self.sample_rate = sample_rate
        self.fps = fps
        self.metrics = metrics
        self.blend_frames = max(1, blend_frames)
        self.transition_frames = (
            transition_frames_for(DEFAULT_TRANSITION_SECONDS, fps)
            if transition_frames is None
            else max(1, transition_frames)
        )
        self.hold_frames = hold_frames
        self._on_started = on_started
        self._on_settled = on_settled
        self.frame = 0  # the next frame number to render
        self._whole = False  # the blend on air (and its speech) cross-fades whole frames
        self._steps = self.blend_frames  # its length in frames, both ways
        self._position = 0  # steps towards the talking picture: 0 idle .. _steps talking
        self._last_patch: FacePatch | None = None
        self._warned_misfit = False
        self._held = 0
        self.underruns = 0
        self.audio_underruns = 0

    @property
    def avatars_differ(self) -> bool:
        return self.talking_avatar is not self.avatar

    @property
    def talking_weight(self) -> float:
        """Weight of the talking picture in the frame last rendered: 0.0 idle, 1.0 talking."""
        return self._position / self._steps

    @property
    def transition_length(self) -> int:
        """Frames the current (or last) blend lasts each way."""
        return self._steps

    # -- the per-tick work ------------------------------------------------------------------

    def render(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Picture (HxWx3 uint8 BGR) and audio (int16, samples_in_frame(k)) for frame k.

        The picture may be shared (idle frames, full-frame patches) and must not be written to;
        a painted one is a fresh array, because the writer queues pictures by reference."""
        self.frame = k + 1
        patch, audio = self._speech_for(k)
        self._advance_blend()
        return self._picture(k, patch), audio

    def _picture(self, k: int, patch: FacePatch | None) -> np.ndarray:
        idle = self.avatar.frame_at(k)
        if self._position == 0:
            return self.life.apply(k, idle)
        weight = self._position / self._steps
        if patch is not None and not _fits(patch, idle.shape):
            # an engine or a vendor handed a picture of the wrong size: show the body, not a crash
            if not self._warned_misfit:
                log.warning("face picture %s at (%d, %d) does not fit the %dx%d output; not shown",
                            patch.pixels.shape, patch.x, patch.y, idle.shape[1], idle.shape[0])  # fmt: skip
                self._warned_misfit = True
            patch = None
        if not self._whole:  # the mouth blend: only the patch rectangle changes
            return self.life.apply(k, idle) if patch is None else self.life.apply_patched(k, idle, patch, weight)
        talking, rectangle = self.talking_avatar.frame_at(k), patch
        if patch is not None and patch.x == 0 and patch.y == 0 and patch.pixels.shape == idle.shape:
            talking, rectangle = patch.pixels, None  # a whole picture of its own: no life drawn on it
        elif rectangle is None and talking is idle:  # (one shared avatar, no face yet: idle itself)
            return self.life.apply(k, idle)
        elif self.talking_life.active:  # the mouth goes on first, so it moves with the head
            life = self.talking_life
            talking = life.apply(k, talking) if rectangle is None else life.apply_patched(k, talking, rectangle)
            rectangle = None
        idle = self.life.apply(k, idle)
        if rectangle is None:
            if weight >= 1.0:
                return talking
        elif weight >= 1.0:
            return rectangle.pasted_on(talking)
        # One output array per frame and no temporaries: the talking frame and then the patch
        # rectangle are each mixed with the idle frame straight into it (the mix is per pixel,
        # so the rectangle can be redone on its own over the body's mix).
        out = np.empty_like(idle)
        cv2.addWeighted(talking, weight, idle, 1.0 - weight, 0.0, dst=out)
        if rectangle is not None:
            y, x, h, w = rectangle.y, rectangle.x, rectangle.height, rectangle.width
            cv2.addWeighted(rectangle.pixels, weight, idle[y : y + h, x : x + w], 1.0 - weight, 0.0,
                            dst=out[y : y + h, x : x + w])  # fmt: skip
        return out

    def _speech_for(self, k: int) -> tuple[FacePatch | None, np.ndarray]:
        quiet = silence(samples_in_frame(k, self.sample_rate, self.fps))
        segment = self._current_segment(k)
        if segment is None:
            return self._last_patch if self.chart.transitioning.is_active else None, quiet
        if segment.stop_at is not None and k >= segment.stop_at:
            self._end(segment, Ending.INTERRUPTED)
            audio = segment.audio[k - segment.start] if k < segment.end else quiet
            return self._last_patch, fade_out(audio) if k == segment.stop_at else quiet
        if k >= segment.end:
            if segment.complete:
                self._end(segment, Ending.FAILED if segment.failure else Ending.FINISHED)
                return self._last_patch, quiet
            self.audio_underruns += 1  # speech not arrived yet: silence, hold the face
            self.metrics.audio_underruns.inc()
            return self._hold(), quiet
        # Taken, not read: a hosted face's whole frames must not pile up for the whole message.
        patch = segment.patches.pop(k, _NOT_RENDERED)
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
            expired = head.job.expiry_reason(time.time())  # once per message, not per frame
            if expired is not None:
                self._expire(head, expired)
                return self._current_segment(k)  # the next one, if its time has come
            whole = self.avatars_differ or head.whole_frames
            if self.chart.transitioning.is_active:
                # the previous message is still blending out: finish that blend now, so this
                # message starts exactly on its frame (its audio is laid onto frame numbers).
                # A cross-fade turns back from where it is instead (snapping a whole frame to
                # idle would be a visible jump).
                if not (whole and self._whole):
                    self._position = 0
                self.chart.blend_finished()
            self._whole = whole
            self._steps = self.transition_frames if whole else self.blend_frames
            if self.chart.idle.is_active:
                self.chart.message_accepted()
            head.playing = True
            head.job.on_air_at = time.monotonic()
            self.chart.frames_ready()
            self._last_patch = None
            self._on_started(head.job, k)
        return head

    def _expire(self, segment: Segment, reason: str) -> None:
        """A message prepared ahead whose expires_at passed before its first frame (it waited
        through an RTMP outage, say): it never airs, and is dead-lettered with the reason."""
        self.schedule.pop_head()
        if segment.job.settle(Outcome.DEAD_LETTERED, reason):
            self._on_settled(segment.job)
        if self.chart.processing.is_active:
            self.chart.failed()  # back to idle unless another message waits

    def _hold(self) -> FacePatch | None:
        self.underruns += 1
        self.metrics.underruns.inc()
        self._held += 1
        return self._last_patch if self._held <= self.hold_frames else None

    def _end(self, segment: Segment, ending: Ending) -> None:
        self.schedule.pop_head()
        outcome = ending.outcome(segment)
        reason = segment.failure or ("cut short by a shutdown" if outcome is Outcome.REQUEUED else "")
        if segment.job.settle(outcome, reason):
            self._on_settled(segment.job)
        self.chart.send(ending.value)

    def _advance_blend(self) -> None:
        chart = self.chart
        if chart.transitioning.is_active:
            waiting = chart.blend_direction > 0 and self._position == 0 and self._last_patch is None
            if waiting and self._held and not self._whole:
                # The first mouth is late (a busy engine): the mouth blend waits for it on the
                # idle picture, speech already playing, so the mouth fades in rather than
                # popping in at full weight once it comes; speech that ends first turns it back.
                # (A cross-fade to another body goes on: that body is there without a face.)
                return
            self._position = min(self._steps, max(0, self._position + chart.blend_direction))
            if self._position in (0, self._steps):
                chart.blend_finished()
                if not chart.talking.is_active:
                    self._last_patch = None
        elif chart.talking.is_active:
            self._position = self._steps
        else:
            self._position = 0

    # -- control (called on the event loop between ticks) -------------------------------------

    def interrupt(self, outcome: Outcome = Outcome.INTERRUPTED) -> Job | None:
        """Stop the speech on air at the next frame (its audio fades over that frame)."""
        head = self.schedule.head()
        if head is None or not head.playing or head.stop_at is not None:
            return None
        head.stop_at = self.frame
        head.stop_outcome = outcome
        return head.job

    def seconds_left(self) -> float | None:
        """Speech left in the message on air (None if nothing plays or its end is unknown)."""
        head = self.schedule.head()
        if head is None or not head.playing or not head.complete:
            return None
        return max(0, head.end - self.frame) / self.fps


def _fits(patch: FacePatch, shape: tuple[int, ...]) -> bool:
    """The patch is a uint8 BGR rectangle lying wholly inside a picture of this shape."""
    pixels = patch.pixels
    return (
        pixels.dtype == np.uint8
        and pixels.ndim == 3
        and pixels.shape[2] == 3
        and 0 <= patch.x
        and 0 <= patch.y
        and patch.x + pixels.shape[1] <= shape[1]
        and patch.y + pixels.shape[0] <= shape[0]
    )
