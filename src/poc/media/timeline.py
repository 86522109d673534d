"""Speech laid onto the frame counter: segments (one per message) and the schedule of them.

The face stage places each message's audio onto absolute frame numbers as soon as the speech
arrives (before any face is rendered), so the compositor can always play the audio on time and
only the picture can be late. A `Segment` holds, per frame number, the samples to write with
that frame and, once the engine has rendered it, the face patch.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Iterable, Sequence

import attrs
import numpy as np

from poc.face.base import FacePatch, RenderedFrame, SpeechSlot
from poc.jobs import Job, Outcome  # noqa: TC001 (attrs needs them at run time)
from poc.media.audio import samples_in_frame
from poc.speech.base import SpeechChunk


class Ending(enum.Enum):
    """How a segment leaves the air; the value is the statechart event that says so."""

    FINISHED = "speech_finished"  # its last frame played: the job played
    FAILED = "failed"  # its speech stopped early and what there was played: dead-lettered
    INTERRUPTED = "interrupted"  # cut at `stop_at`: settled as its `stop_outcome`

    def outcome(self, segment: Segment) -> Outcome:
        """The job's outcome when `segment` ends this way."""
        if self is Ending.INTERRUPTED:
            return segment.stop_outcome
        return Outcome.PLAYED if self is Ending.FINISHED else Outcome.DEAD_LETTERED


@attrs.define(eq=False)
class Segment:
    job: Job
    start: int  # first frame number of this message on air
    audio: list[np.ndarray] = attrs.field(factory=list)  # audio[i] plays with frame start+i
    patches: dict[int, FacePatch | None] = attrs.field(factory=dict)  # rendered, by frame number
    complete: bool = False  # every slot is known (speech ended or failed)
    failure: str = ""  # why speech stopped early, if it did
    playing: bool = False  # the compositor has started it
    stop_at: int | None = None  # interrupt: last frame to play (faded), set by the compositor
    stop_outcome: Outcome = Outcome.INTERRUPTED  # or REQUEUED when cut short by a shutdown
    # Its patches are whole pictures of its own (a hosted face's frames), not a mouth on the
    # talking body: the switch to and from it cross-fades whole frames even with one avatar.
    whole_frames: bool = False

    @property
    def end(self) -> int:
        """One past the last frame number with audio."""
        return self.start + len(self.audio)

    @property
    def air_end(self) -> int:
        """One past its last frame on air: where an interrupt stops it (its fade frame
        included), not where its speech would have ended."""
        return self.end if self.stop_at is None else min(self.end, self.stop_at + 1)

    def add_slots(self, slots: Sequence[SpeechSlot]) -> None:
        for slot in slots:
            if slot.index != self.end:
                raise ValueError(f"slot {slot.index} is not contiguous with segment end {self.end}")
            self.audio.append(slot.audio)

    def add_rendered(self, frames: Iterable[RenderedFrame]) -> None:
        for frame in frames:
            self.patches[frame.index] = frame.patch


class SlotCutter:
    """Cuts a message's speech chunks into per-frame slots at absolute frame numbers.

    Samples that do not fill a whole frame wait for the next chunk (sentences join without a
    click or a gap); `flush` pads the tail with silence. `skip_to` leaves a silent gap when the
    next speech arrives too late to join on (the pause is then a natural one, not a cut word).
    Positions below are counted in samples since the start of the message.
    """

    def __init__(self, first_frame: int, sample_rate: int, fps: int) -> None:
        self.next_frame = first_frame
        self._rate = sample_rate
        self._fps = fps
        self._pending = np.zeros(0, dtype=np.int16)
        self._consumed = 0  # samples already cut into slots
        self._marks: list[tuple[int, str]] = []  # (position, phoneme), in order

    def cut(self, chunk: SpeechChunk) -> list[SpeechSlot]:
        received = self._consumed + len(self._pending)
        self._marks.extend((received + m.sample, m.phoneme) for m in chunk.phonemes)
        self._pending = np.concatenate([self._pending, chunk.audio.astype(np.int16, copy=False)])
        return self._take(final=False)

    def flush(self) -> list[SpeechSlot]:
        return self._take(final=True)

    def skip_to(self, frame: int) -> list[SpeechSlot]:
        """Silent slots up to `frame` (after flushing what is pending)."""
        slots = self.flush()
        self._marks.clear()
        while self.next_frame < frame:
            need = self._need()
            slots.append(self._slot(np.zeros(need, dtype=np.int16), None))
            self._consumed += need
        return slots

    def _need(self) -> int:
        return samples_in_frame(self.next_frame, self._rate, self._fps)

    def _take(self, final: bool) -> list[SpeechSlot]:
        slots: list[SpeechSlot] = []
        while len(self._pending) >= self._need() or (final and len(self._pending)):
            need = self._need()
            block = self._pending[:need]
            if len(block) < need:
                block = np.concatenate([block, np.zeros(need - len(block), dtype=np.int16)])
            self._pending = self._pending[need:]
            slots.append(self._slot(block, self._phoneme_at(self._consumed + need // 2)))
            self._consumed += need
            self._prune()
        return slots

    def _phoneme_at(self, position: int) -> str | None:
        current = None
        for mark_position, phoneme in self._marks:
            if mark_position > position:
                break
            current = phoneme
        return current

    def _prune(self) -> None:
        """Forget marks that ended before the next slot, keeping the one still sounding."""
        passed = [i for i, (pos, _) in enumerate(self._marks) if pos <= self._consumed]
        if len(passed) > 1:
            del self._marks[: passed[-1]]

    def _slot(self, audio: np.ndarray, phoneme: str | None) -> SpeechSlot:
        slot = SpeechSlot(index=self.next_frame, audio=audio, phoneme=phoneme)
        self.next_frame += 1
        return slot


class Schedule:
    """Segments in play order. Read by the compositor every tick, written by the face stage."""

    def __init__(self) -> None:
        self._segments: deque[Segment] = deque()
        # Where the last segment that went on air left it. Kept once it is popped (on its last
        # frame): its mouth still blends out, and the next message keeps its pause after it.
        self.aired_until: int | None = None

    def __len__(self) -> int:
        return len(self._segments)

    def __iter__(self):
        return iter(self._segments)

    def head(self) -> Segment | None:
        return self._segments[0] if self._segments else None

    def append(self, segment: Segment) -> None:
        self._segments.append(segment)

    def pop_head(self) -> Segment:
        segment = self._segments.popleft()
        if segment.playing:  # (one dropped before it started never reached the air)
            self.aired_until = segment.air_end
        return segment

    def last_end(self) -> int | None:
        return self._segments[-1].end if self._segments else None

    def remove_not_started(self) -> list[Segment]:
        """Take out every segment the compositor has not started (to re-plan them)."""
        kept = deque(s for s in self._segments if s.playing)
        removed = [s for s in self._segments if not s.playing]
        self._segments = kept
        return removed

    def frames_ahead(self, now: int) -> int:
        """Frames of speech scheduled from now on (the media-time budget)."""
        return sum(max(0, s.end - max(now, s.start)) for s in self._segments)
