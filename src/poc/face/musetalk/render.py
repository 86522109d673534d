"""One batch of frames through the model: audio features, UNet, VAE decode, blend.

Given an utterance's 16 kHz audio so far and a batch of frames (their number within the
utterance, which fixes their audio window, and their counter value, which fixes the body frame),
it returns one patch per frame, or None for frames whose 200-ms window is silent: MuseTalk keeps
moving the mouth on silence, so those frames show the idle face instead and cost nothing.
All voiced frames of a batch share one Whisper pass over the widest window that fits.
"""

from __future__ import annotations

import time
from typing import Sequence

import attrs
import numpy as np

from poc.face.avatar import Avatar
from poc.face.base import FacePatch
from poc.face.musetalk.geometry import blend_face
from poc.face.musetalk.model import AUDIO_WIDTH, MuseTalkModel
from poc.face.musetalk.prepare import PreparedAvatar
from poc.face.musetalk.timing import (
    LAYERS,
    SAMPLES_PER_STEP,
    audio_steps_for_frame,
    encoder_window,
    steps_in_samples,
)

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


class FrameRenderer:
    """Renders batches for one avatar with one model at one frame rate."""

    def __init__(self, model: MuseTalkModel, prepared: PreparedAvatar, avatar: Avatar, fps: int) -> None:
        if len(prepared.geometry) != len(avatar.frames):
            raise ValueError("prepared avatar does not belong to this avatar (frame counts differ)")
        self.model = model
        self.prepared = prepared
        self.avatar = avatar
        self.fps = fps
        torch = model.torch
        self._latents = torch.from_numpy(prepared.latents).to(model.device, model.dtype)
        self.timer: StageTimer | None = None

    def render(self, frames: Sequence[tuple[int, int]], audio: np.ndarray) -> list[FacePatch | None]:
        """Patches for frames given as (number in the utterance, counter value).

        Every encoder step a frame needs must already be in `audio`, except past the end of a
        finished utterance, where missing steps are zero padding (as upstream pads clip ends).
        """
        windows = [audio_steps_for_frame(n, self.fps) for n, _ in frames]
        voiced = [k for k, w in enumerate(windows) if not is_silent(audio, w)]
        patches: list[FacePatch | None] = [None] * len(frames)
        if voiced:
            with self.model.torch.inference_mode():
                rendered = self._render_voiced([frames[k] for k in voiced], [windows[k] for k in voiced], audio)
            for k, patch in zip(voiced, rendered):
                patches[k] = patch
        return patches

    def _render_voiced(self, frames: list[tuple[int, int]], windows: list[range], audio: np.ndarray) -> list[FacePatch]:
        torch = self.model.torch
        limit = steps_in_samples(audio.size)
        first = max(0, min(w.start for w in windows))
        stop = max(first, min(limit, max(w.stop for w in windows)))
        if stop - first > self.model.window_steps:  # a batch wider than Whisper's window: split it
            half = len(frames) // 2
            return self._render_voiced(frames[:half], windows[:half], audio) + self._render_voiced(
                frames[half:], windows[half:], audio
            )
        t0 = time.perf_counter()
        w0, w1 = encoder_window(first, stop, limit, self.model.window_steps)
        if w1 > w0:
            features = self.model.encode_audio(audio[w0 * SAMPLES_PER_STEP : w1 * SAMPLES_PER_STEP])[: w1 - w0]
        else:  # nothing but padding in reach (sound only in a trailing part-step)
            features = torch.zeros(0, LAYERS, AUDIO_WIDTH, device=self.model.device, dtype=self.model.dtype)
        pad_row = features.shape[0]  # index of the all-zero row used for padding steps
        features = torch.cat([features, features.new_zeros(1, LAYERS, AUDIO_WIDTH)])
        steps = np.array([list(w) for w in windows])  # (B, 10)
        valid = (steps >= w0) & (steps < w1) & (steps < limit)
        index = torch.from_numpy(np.where(valid, steps - w0, pad_row)).to(features.device)
        tokens = self.model.audio_tokens(features[index])
        self._lap("features", t0)

        t1 = time.perf_counter()
        numbers = [self.avatar.frame_number(counter) for _, counter in frames]
        latents = self._latents[torch.tensor(numbers, device=self._latents.device)]
        predicted = self.model.unet_step(latents, tokens)
        self._lap("unet", t1)

        t2 = time.perf_counter()
        faces = self.model.codec.decode(predicted)
        self._lap("vae", t2)

        t3 = time.perf_counter()
        out = []
        for face, (_, counter), number in zip(faces, frames, numbers):
            x, y, pixels = blend_face(self.avatar.frame_at(counter), face, self.prepared.geometry[number])
            out.append(FacePatch(x=x, y=y, pixels=pixels))
        self._lap("blend", t3)
        if self.timer is not None:
            self.timer.frames += len(frames)
        return out

    def _lap(self, stage: str, start: float) -> None:
        if self.timer is not None:
            self.model.synchronize()
            self.timer.seconds[stage] += time.perf_counter() - start
