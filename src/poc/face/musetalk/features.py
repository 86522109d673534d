"""An utterance's Whisper features: each arriving stretch of audio encoded once, steps kept.

Whisper-tiny's encoder always runs over one fixed window (30 s; 3 s for the tests' tiny weights:
transformers refuses any other length), zero-padded, and attends over all of it, so a step's
features depend on the audio around it, after it too. Upstream encodes a whole clip at once
("offline"); streaming, the audio after the newest sample has not arrived yet.

So the features are a store of encoded steps, grown one pass at a time. When frames need a step
that is not final yet and audio has arrived since the last pass, ONE pass runs over as much real
audio as the window holds, ending at the newest sample (the partial last step included, as
context): the new steps, the provisional ones before them, and the rest of the window filled with
the past. Its steps are kept. The last `LOOKAHEAD_STEPS` whole steps of a pass have less than a
frame's window of real audio after them: they stay provisional and are encoded again by the next
pass; every step before them is final and never encoded again. Frames slice their 10 steps from
the store; until more audio comes, provisional steps are the best there is, and are used.

Why: the pipeline hears a whole TTS chunk (often a sentence, 1-4 s) before it renders the chunk's
frames batch by batch (engine.MuseTalkUtterance.hear). Encoding on each batch would cost one pass
per batch (the window is fixed, so a pass costs the same whatever it covers), and give the early
frames of a chunk only the look-ahead up to their batch's end. With the store, the first batch's
pass covers the whole chunk, every frame of it gets the whole chunk as look-ahead, and the later
batches read the store: one pass per arriving stretch. Only a stretch wider than the window takes
more passes, each keeping `LOOKAHEAD_STEPS` of real audio after the steps it makes final.

The store drops steps that no later frame can need (frames come in order, so a frame's window
never starts before the previous request's last window), so a long utterance holds only about the
window's worth of steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from poc.face.musetalk.model import AUDIO_WIDTH, MuseTalkModel
from poc.face.musetalk.timing import LAYERS, SAMPLES_PER_STEP, WINDOW_STEPS, encoder_window, steps_in_samples

if TYPE_CHECKING:
    import torch

# Real audio a step needs after it before its features are final: a frame's window (10 steps).
# With this, a frame still waiting for its audio (its window reaching past the newest whole step)
# reads only steps that the next pass encodes again, so holding a frame back never leaves it
# with less look-ahead than the audio that made it ready.
LOOKAHEAD_STEPS = WINDOW_STEPS


class StreamedFeatures:
    """Whisper features for one utterance's 16-kHz audio, each step encoded once it is final;
    `passes` counts encoder passes. Requests must come in frame order (see `windows`)."""

    def __init__(self, model: MuseTalkModel) -> None:
        if model.window_steps <= LOOKAHEAD_STEPS:
            raise ValueError(f"the encoder's {model.window_steps} steps leave no room for {LOOKAHEAD_STEPS} of look-ahead")
        self.model = model
        self.passes = 0
        torch = model.torch
        self._store = torch.zeros(0, LAYERS, AUDIO_WIDTH, device=model.device, dtype=model.dtype)
        self._base = 0  # the step the store's first row holds (earlier steps were dropped)
        self._final = 0  # steps before this are final; from here on the store is provisional
        self._heard = 0  # samples of audio the last pass saw

    def windows(self, windows: Sequence[range], audio: np.ndarray) -> "torch.Tensor":
        """(B, 10, 5, 384) features for these step windows of `audio` (all of the utterance so
        far: it only ever grows); steps outside the audio's whole steps are zeros (padding, as
        upstream pads clips). No window may start before the previous call's last window."""
        torch = self.model.torch
        limit = steps_in_samples(audio.size)
        needed = min(limit, max(w.stop for w in windows))
        if needed > self._final and audio.size > self._heard:
            self._encode(audio)
        steps = np.array([list(w) for w in windows])  # (B, 10)
        valid = (steps >= 0) & (steps < limit)
        if (steps[valid] < self._base).any():
            raise ValueError(f"a window needs steps before {self._base}, which an earlier request let go")
        features = torch.cat([self._store, self._store.new_zeros(1, LAYERS, AUDIO_WIDTH)])
        pad_row = features.shape[0] - 1
        index = torch.from_numpy(np.where(valid, steps - self._base, pad_row)).to(features.device)
        picked = features[index]
        self._drop_before(min(self._final, windows[-1].start))
        return picked

    def _encode(self, audio: np.ndarray) -> None:
        """Encode every step from the first provisional one to the newest whole step, in as few
        passes as the window allows, and keep them."""
        torch = self.model.torch
        capacity = self.model.window_steps
        limit = steps_in_samples(audio.size)
        reach = -(-audio.size // SAMPLES_PER_STEP)  # the partial last step counts as context
        begin = self._final
        while begin < limit:
            w0, w1 = encoder_window(begin, min(limit, begin + capacity), reach, capacity)
            end = min(audio.size, w1 * SAMPLES_PER_STEP)
            encoded = self.model.encode_audio(audio[w0 * SAMPLES_PER_STEP : end])
            self.passes += 1
            if end == audio.size:  # this pass reached the newest sample: its last steps stay provisional
                keep, final = limit, max(begin, limit - LOOKAHEAD_STEPS)
            else:  # more audio than the window holds: keep the steps with their look-ahead in it
                keep = final = w1 - LOOKAHEAD_STEPS
            self._store = torch.cat([self._store[: begin - self._base], encoded[begin - w0 : keep - w0]])
            self._final = final
            begin = keep
        self._heard = audio.size

    def _drop_before(self, step: int) -> None:
        if step > self._base:
            self._store = self._store[step - self._base :]
            self._base = step
