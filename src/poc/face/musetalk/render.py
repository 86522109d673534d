"""One batch of frames through the model: audio features, UNet, VAE decode, blend.

Given an utterance's 16 kHz audio so far and a batch of frames (their number within the
utterance, which fixes their audio window, and their counter value, which fixes the body frame),
it returns one patch per frame. Which frames are worth the model is the caller's choice: the
utterance (engine.py) skips silence outside speech with `is_silent`, and renders everything from
its first voiced frame on, as upstream renders every frame. A call's frames share one Whisper
pass (poc.face.musetalk.features), however many batches the batcher cuts them into.

Features and the blend are per station (each has its own audio and avatar); the UNet step and the
VAE decode go through a batcher seat (poc.face.musetalk.batcher) shared by every station on the
same model, or run in place when the renderer has none (the bench). Through a seat, the faces of
each batch are blended as soon as that batch comes back, on the station's thread, while the
batcher already has the device on the next batch (ModelStages splits a batch into launch and
collect for that); the patches are the same as blending them all at the end.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import attrs
import numpy as np

from poc.face.avatar import Avatar
from poc.face.base import FacePatch
from poc.face.musetalk.batcher import BatchFailed, Seat
from poc.face.musetalk.deadlines import StationClock
from poc.face.musetalk.features import StreamedFeatures
from poc.face.musetalk.geometry import blend_face
from poc.face.musetalk.model import DecodedFaces, MuseTalkModel
from poc.face.musetalk.prepare import PreparedAvatar
from poc.face.musetalk.timing import SAMPLES_PER_STEP, audio_steps_for_frame

if TYPE_CHECKING:
    import torch

SILENCE_RMS = 10 ** (-50 / 20)  # -50 dBFS over the 200-ms window counts as silence
STAGES = ("features", "unet", "vae", "blend")


@attrs.define
class StageTimer:
    """Seconds spent per stage (GPU work waited for at each stage's end) and frames rendered."""

    seconds: dict[str, float] = attrs.field(factory=lambda: dict.fromkeys(STAGES, 0.0))
    frames: int = 0


def is_silent(audio: np.ndarray, window: range) -> bool:
    """True when the 16 kHz samples under this step window are (near) silence; steps outside
    the audio count as silence."""
    lo = max(0, window.start * SAMPLES_PER_STEP)
    hi = min(audio.size, window.stop * SAMPLES_PER_STEP)
    if hi <= lo:
        return True
    x = audio[lo:hi].astype(np.float64)
    return float(np.sqrt(np.mean(x * x))) < SILENCE_RMS


@attrs.frozen
class FaceRow:
    """What the UNet needs for one frame: its (8, 32, 32) reference latent and (50, 384) tokens."""

    latents: "torch.Tensor"
    tokens: "torch.Tensor"


@attrs.frozen
class Rendered:
    """Patches, and the errors of the batches that failed (their rows are None: the idle face)."""

    patches: list[FacePatch | None]
    errors: list[Exception]


def unet_and_decode(
    model: MuseTalkModel, rows: Sequence[FaceRow], lap: Callable[[str, float], None] | None = None
) -> list[np.ndarray]:
    """One batch: the rows' faces as (256, 256, 3) uint8 BGR images. `lap(stage, start)` times
    the stages when given."""
    torch = model.torch
    with torch.inference_mode():
        latents, tokens = _stacked(torch, rows)
        t1 = time.perf_counter()
        predicted = model.unet_step(latents, tokens)
        if lap is not None:
            lap("unet", t1)
        t2 = time.perf_counter()
        faces = model.codec.decode(predicted)
        if lap is not None:
            lap("vae", t2)
    return list(faces)


def _stacked(torch: Any, rows: Sequence[FaceRow]) -> tuple["torch.Tensor", "torch.Tensor"]:
    """A batch's UNet inputs: (B, 8, 32, 32) latents and (B, 50, 384) tokens."""
    return torch.stack([row.latents for row in rows]), torch.stack([row.tokens for row in rows])


class ModelStages:
    """UNet + VAE decode of a batch split for the batcher's pipeline (batcher.Stages): launch
    queues the batch on the device, collect waits for its faces. On a CPU launch does the work
    and the batch is ready at once."""

    def __init__(self, model: MuseTalkModel) -> None:
        self.model = model

    def launch(self, rows: Sequence[FaceRow]) -> DecodedFaces:
        torch = self.model.torch
        with torch.inference_mode():
            return self.model.codec.launch_decode(self.model.unet_step(*_stacked(torch, rows)))

    def ready(self, launched: DecodedFaces) -> bool:
        return self.model.codec.ready(launched)

    def collect(self, launched: DecodedFaces) -> list[np.ndarray]:
        return list(self.model.codec.collect(launched))


class FrameRenderer:
    """Renders batches for one avatar with one model at one frame rate.

    seat: where UNet + decode run (a batcher shared with other stations); without one they run
    here, on the caller's thread, one batch per render, timing the UNet and VAE stages for
    `timer` (the bench). clock: this station's frame deadlines.
    """

    def __init__(
        self,
        model: MuseTalkModel,
        prepared: PreparedAvatar,
        avatar: Avatar,
        fps: int,
        seat: Seat | None = None,
        clock: StationClock | None = None,
    ) -> None:
        if len(prepared.geometry) != len(avatar.frames):
            raise ValueError("prepared avatar does not belong to this avatar (frame counts differ)")
        self.model = model
        self.prepared = prepared
        self.avatar = avatar
        self.fps = fps
        self.clock = clock if clock is not None else StationClock(fps)
        self.seat = seat
        torch = model.torch
        self._latents = torch.from_numpy(prepared.latents).to(model.device, model.dtype)
        self.timer: StageTimer | None = None

    def render(
        self, frames: Sequence[tuple[int, int]], audio: np.ndarray, features: StreamedFeatures | None = None
    ) -> list[FacePatch | None]:
        """Patches for frames given as (number in the utterance, counter value), every one
        through the model; raises the first error if any batch failed.

        Every encoder step a frame needs must already be in `audio`, except past the end of a
        finished utterance, where missing steps are zero padding (as upstream pads clip ends).
        features: the utterance's (it counts the encoder passes); without them, this call's own.
        """
        rendered = self.render_rows(frames, audio, features)
        if rendered.errors:
            raise rendered.errors[0]
        return rendered.patches

    def render_rows(
        self, frames: Sequence[tuple[int, int]], audio: np.ndarray, features: StreamedFeatures | None = None
    ) -> Rendered:
        """As render(), but a batch that fails leaves only its own rows without a patch."""
        patches: list[FacePatch | None] = [None] * len(frames)
        if not frames:
            return Rendered(patches, [])
        windows = [audio_steps_for_frame(n, self.fps) for n, _ in frames]
        with self.model.torch.inference_mode():
            if features is None:
                features = StreamedFeatures(self.model)
            rows = self._rows(list(frames), windows, audio, features)
        counters = [counter for _, counter in frames]
        failures: list[BatchFailed | None] = [None] * len(frames)

        def blend(positions: list[int], faces: list[np.ndarray | BatchFailed]) -> None:
            t3 = time.perf_counter()
            for k, face in zip(positions, faces):
                if isinstance(face, BatchFailed):
                    failures[k] = face
                    continue
                number = self.avatar.frame_number(counters[k])
                x, y, pixels = blend_face(self.avatar.frame_at(counters[k]), face, self.prepared.geometry[number])
                patches[k] = FacePatch(x=x, y=y, pixels=pixels)
            self._lap("blend", t3)

        if self.seat is not None:  # blend each batch as it comes back
            self.seat.submit(rows, [self.clock.deadline(c) for c in counters], on_batch=blend)
        else:
            blend(list(range(len(rows))), self._faces_here(rows))
        errors: list[Exception] = []
        for failure in failures:  # in row order, each failed batch's error once
            if failure is not None and not any(e is failure.error for e in errors):
                errors.append(failure.error)
        if self.timer is not None:
            self.timer.frames += len(frames)
        return Rendered(patches, errors)

    def _faces_here(self, rows: list[FaceRow]) -> list[np.ndarray | BatchFailed]:
        """UNet + decode on this thread, one batch, timed for the bench."""
        try:
            return list(unet_and_decode(self.model, rows, self._lap))
        except Exception as error:
            return [BatchFailed(error)] * len(rows)

    def _rows(
        self, frames: list[tuple[int, int]], windows: list[range], audio: np.ndarray, features: StreamedFeatures
    ) -> list[FaceRow]:
        """Audio tokens and reference latents per frame."""
        torch = self.model.torch
        t0 = time.perf_counter()
        tokens = self.model.audio_tokens(features.windows(windows, audio))
        numbers = [self.avatar.frame_number(counter) for _, counter in frames]
        latents = self._latents[torch.tensor(numbers, device=self._latents.device)]
        self._lap("features", t0)
        return [FaceRow(latents=latents[k], tokens=tokens[k]) for k in range(len(frames))]

    def _lap(self, stage: str, start: float) -> None:
        if self.timer is not None:
            self.model.synchronize()
            self.timer.seconds[stage] += time.perf_counter() - start
