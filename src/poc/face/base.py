"""The talking-face engine contract, shared by the CPU warp engine and MuseTalk.

The compositor owns the clock and a single frame counter. Before an utterance goes on air the
pipeline lays its audio onto that counter: one `SpeechSlot` per output frame, carrying exactly
the samples that will be written with that frame. An engine turns slots into `RenderedFrame`s
for the same counter values, so the body frame it draws on is the one the compositor will show
at that moment (the avatar's cycle indexed by the counter: `Avatar.frame_at`, `Avatar.frame_number`).

Engines are synchronous and run in a worker thread; one `Utterance` lives per message so an
engine can keep audio context across feeds (MuseTalk needs ~120 ms of future audio per frame,
so `feed` may hold frames back until more audio or `finish` arrives).
"""

from __future__ import annotations

from typing import Protocol, Sequence

import attrs
import cv2
import numpy as np

from poc.errors import StartupError


@attrs.frozen
class FacePatch:
    """Pixels to paste over the output frame at rows y..y+h and columns x..x+w.

    `pixels` is uint8 HxWx3 in the avatar's colour order (BGR), already blended onto the body
    frame of its index, so pasting the rectangle is all the compositor does.
    """

    x: int
    y: int
    pixels: np.ndarray

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    def blended_over(self, picture: np.ndarray, weight: float = 1.0) -> np.ndarray:
        """This rectangle of `picture` with the patch over it at `weight` (the pixels themselves
        at 1; below, cv2.addWeighted: one call, so every paste of a patch gives the same values)."""
        if weight >= 1.0:
            return self.pixels
        y, x, h, w = self.y, self.x, self.height, self.width
        return cv2.addWeighted(self.pixels, weight, picture[y : y + h, x : x + w], 1.0 - weight, 0.0)

    def pasted_on(self, picture: np.ndarray, weight: float = 1.0) -> np.ndarray:
        """A copy of `picture` with the patch pasted at `weight`."""
        out = picture.copy()
        out[self.y : self.y + self.height, self.x : self.x + self.width] = self.blended_over(picture, weight)
        return out


@attrs.frozen
class SpeechSlot:
    """One output frame's worth of speech.

    index: the frame counter value at which this frame is shown (selects the body frame).
    audio: int16 mono samples at the stream sample rate written with this frame.
    phoneme: the phoneme sounding at the middle of the frame when the TTS reported timings
        (espeak/IPA symbols as piper gives them), else None (audio messages, edge-tts).
    """

    index: int
    audio: np.ndarray
    phoneme: str | None = None


@attrs.frozen
class RenderedFrame:
    """The face for one slot. patch None means: show the idle frame (mouth at rest)."""

    index: int
    patch: FacePatch | None


class Utterance(Protocol):
    """Renders one message. Returned frames are in index order, never repeated or skipped:
    over feed()+finish() exactly one RenderedFrame per slot fed.

    failures: batches the engine failed on but recovered from itself by returning idle faces
    (patch None) instead of raising; the pipeline counts them with the faults it catches."""

    failures: int

    def hear(self, slots: Sequence[SpeechSlot]) -> None:
        """These slots will be fed next, in order, perhaps in several pieces: an engine that
        looks ahead may take their audio now, so the frames fed before them see it (MuseTalk:
        the whole stretch as look-ahead, one Whisper pass). Returns no frames; a no-op for
        engines that need no future audio."""
        ...

    def feed(self, slots: Sequence[SpeechSlot]) -> list[RenderedFrame]: ...

    def finish(self) -> list[RenderedFrame]: ...


class FaceEngine(Protocol):
    """A talking-face engine bound to one avatar and one output geometry."""

    name: str

    @property
    def lead_seconds(self) -> float:
        """How far ahead of playout audio must reach the engine for frames to be ready in time."""
        ...

    @property
    def lookahead_seconds(self) -> float:
        """The future audio a frame needs before it can be drawn (part of lead_seconds; the
        rest is render time). A first chunk that already holds this much lets the message
        start sooner."""
        ...

    @property
    def improves_with_later_audio(self) -> bool:
        """True when a frame's face depends on speech well past its look-ahead (MuseTalk: the
        Whisper encoder attends over its whole 30-s segment), so the pipeline renders each frame
        as late as is safe, hearing the speech that arrives meanwhile
        (PipelineOptions.render_ahead_seconds). False: frames render as soon as they can."""
        ...

    @property
    def batch_size(self) -> int:
        """Slots the pipeline feeds per call: the engine's efficient batch (MuseTalk renders
        this many frames at once on the GPU); the pipeline feeds at least two."""
        ...

    def warm_up(self) -> object:
        """Pay one-off costs before the first message (CUDA start-up, kernel selection) and
        measure what `lead_seconds` depends on; a no-op where there is nothing to do. Blocking,
        called once before the engine is attached; raises EngineError if the engine cannot run.
        What it returns is the engine's own business (MuseTalk: frames per second)."""
        ...

    def start_utterance(self) -> Utterance: ...

    def close(self) -> None: ...


class EngineError(StartupError, RuntimeError):
    """The engine cannot run (missing weights, bad avatar): a start-up error, said in one line.
    `setting` names the env setting at fault where the raiser knows it; face.factory names
    the rest."""


class AvatarFaceError(EngineError):
    """The avatar holds no face the engine can draw on: the fix is another avatar file, so
    face.factory names the setting that chose the talking avatar."""
