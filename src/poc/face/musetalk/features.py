"""An utterance's Whisper features: one encoder pass per arriving stretch of audio, counted.

Whisper-tiny's encoder always runs over one fixed window (30 s; 3 s for the tests' tiny weights:
transformers refuses any other length), zero-padded, and attends over all of it, so a step's
features depend on the audio around it, after it too. Upstream encodes a whole clip at once
("offline"); streaming, the audio after the newest frames has not arrived yet.

Each request (the frames one feed or finish makes ready, all at once, however many batches the
batcher later cuts them into) runs ONE pass over as much real audio as the window holds, ending at
the newest sample (the partial last step included, as context): every step the frames need, all
the look-ahead that has arrived, and the rest of the window filled with the past. Only a request
spanning more than a window takes more passes, each keeping `LOOKAHEAD_STEPS` of real audio after
the steps it keeps.

Why no store of finished steps, encoded once and reused: a frame becomes ready only when the audio
reaches the end of its window, so each request needs steps no earlier pass saw, and its pass runs
anyway, at the same cost whatever it covers (the window is fixed). Reusing older steps would save
no pass and only give them less look-ahead than this pass has. Measured with the tiny random
weights (docs/musetalk.md): a store keeping steps with L steps of look-ahead ran exactly as many
passes for every L, and differed from this up to 0.7 % per frame at L = 0, 0.4 % at L = 5, 0 at
L >= 9 (where no frame ever reads a stored step).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from poc.face.musetalk.model import AUDIO_WIDTH, MuseTalkModel
from poc.face.musetalk.timing import LAYERS, SAMPLES_PER_STEP, WINDOW_STEPS, encoder_window, steps_in_samples

if TYPE_CHECKING:
    import torch

# Real audio after the last step a pass keeps when a request spans more than one window: a
# frame's window (10 steps), as much look-ahead as a frame streamed slot by slot ever gets.
LOOKAHEAD_STEPS = WINDOW_STEPS


class StreamedFeatures:
    """Whisper features for one utterance's 16-kHz audio; `passes` counts encoder passes."""

    def __init__(self, model: MuseTalkModel) -> None:
        if model.window_steps <= LOOKAHEAD_STEPS:
            raise ValueError(f"the encoder's {model.window_steps} steps leave no room for {LOOKAHEAD_STEPS} of look-ahead")
        self.model = model
        self.passes = 0

    def windows(self, windows: Sequence[range], audio: np.ndarray) -> "torch.Tensor":
        """(B, 10, 5, 384) features for these step windows of `audio` (all of the utterance so
        far); steps outside the audio's whole steps are zeros (padding, as upstream pads clips)."""
        torch = self.model.torch
        limit = steps_in_samples(audio.size)
        first = min(limit, max(0, min(w.start for w in windows)))
        stop = max(first, min(limit, max(w.stop for w in windows)))
        encoded = self._encode(first, stop, audio)
        features = torch.cat([encoded, encoded.new_zeros(1, LAYERS, AUDIO_WIDTH)])
        pad_row = features.shape[0] - 1
        steps = np.array([list(w) for w in windows])  # (B, 10)
        valid = (steps >= first) & (steps < stop)
        index = torch.from_numpy(np.where(valid, steps - first, pad_row)).to(features.device)
        return features[index]

    def _encode(self, first: int, stop: int, audio: np.ndarray) -> "torch.Tensor":
        """Steps [first, stop) of `audio`, in as few passes as the window allows."""
        torch = self.model.torch
        capacity = self.model.window_steps
        reach = -(-audio.size // SAMPLES_PER_STEP)  # the partial last step counts as context
        parts = [torch.zeros(0, LAYERS, AUDIO_WIDTH, device=self.model.device, dtype=self.model.dtype)]
        begin = first
        while begin < stop:
            w0, w1 = encoder_window(begin, min(stop, begin + capacity), reach, capacity)
            end = min(audio.size, w1 * SAMPLES_PER_STEP)
            encoded = self.model.encode_audio(audio[w0 * SAMPLES_PER_STEP : end])
            self.passes += 1
            # more audio than the window holds: keep the steps that have their look-ahead in it
            keep = stop if end == audio.size else min(stop, w1 - LOOKAHEAD_STEPS)
            parts.append(encoded[begin - w0 : keep - w0])
            begin = keep
        return torch.cat(parts)
