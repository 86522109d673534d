"""An utterance's Whisper features, encoded as upstream encodes a whole clip, from the audio
heard so far.

Upstream ("offline") cuts a clip's 16-kHz audio into 30-s segments from its start, runs each
segment through Whisper-tiny's encoder (padded to the fixed 30-s window), and concatenates the
steps. The encoder's attention is global: with the trained weights a step's features move with
everything else in its segment, the audio after it too (measured, docs/musetalk.md: a step 1 s
into a sentence differs from its offline features by 15-25 % while the next sentence is
missing, and still by about 8 % with 4 s of it). Position matters as much: the same audio at
another place in the window gives other features. So nothing short of the segment's whole audio
at the segment's own place gives upstream's features.

Streaming, the audio after the newest sample has not arrived yet. The store therefore encodes
each segment exactly as offline would, with the part of it heard so far, and encodes it again
whenever frames still to be rendered need its steps and more of it has been heard since. A frame
rendered once its segment's audio has all arrived (or the utterance has ended) gets upstream's
features exactly; one rendered earlier gets the closest there is: the same segment, the same
positions, with the part still to come as padding.

Why this costs nothing extra: the window is fixed, so a pass costs the same whatever it covers.
The pipeline hears a whole TTS chunk before rendering its frames batch by batch
(engine.MuseTalkUtterance.hear): the first batch's pass covers all the audio heard, the later
batches read the store. One pass per arriving stretch, as before, and every pass a fresh one.

Steps that no later frame can need are dropped (frames come in order, so a frame's window never
starts before the previous request's last window), and with them any segment wholly before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import attrs
import numpy as np

from poc.face.musetalk.model import AUDIO_WIDTH, MuseTalkModel
from poc.face.musetalk.timing import LAYERS, steps_in_samples

if TYPE_CHECKING:
    import torch


@attrs.define
class _Segment:
    states: "torch.Tensor"  # (window steps, 5, 384): the encoder's output for the segment
    heard: int  # samples of the segment's audio that the pass saw


class StreamedFeatures:
    """Whisper features for one utterance's 16-kHz audio, each segment encoded from what has
    been heard of it; `passes` counts encoder passes. Requests must come in frame order."""

    def __init__(self, model: MuseTalkModel) -> None:
        self.model = model
        self.passes = 0
        self._segments: dict[int, _Segment] = {}
        self._base = 0  # no later request needs a step before this one

    def windows(self, windows: Sequence[range], audio: np.ndarray) -> "torch.Tensor":
        """(B, 10, 5, 384) features for these step windows of `audio` (all of the utterance so
        far: it only ever grows); steps outside the audio's whole steps are zeros (padding, as
        upstream pads clips). No window may start before the previous call's last window."""
        torch = self.model.torch
        span = self.model.window_steps
        limit = steps_in_samples(audio.size)
        steps = np.array([list(w) for w in windows])  # (B, 10)
        valid = (steps >= 0) & (steps < limit)
        if (steps[valid] < self._base).any():
            raise ValueError(f"a window needs steps before {self._base}, which an earlier request let go")
        needed = [int(k) for k in np.unique(steps[valid] // span)]  # sorted
        for k in needed:
            self._refresh(k, audio)
        states = [self._segments[k].states for k in needed]
        self._let_go_before(windows[-1].start)
        if not needed:  # every step is padding
            return torch.zeros(*steps.shape, LAYERS, AUDIO_WIDTH, device=self.model.device, dtype=self.model.dtype)
        # Index the segment itself; only a window across a segment cut needs the two side by side.
        table = states[0] if len(states) == 1 else torch.cat(states)
        place = np.searchsorted(np.array(needed, dtype=np.int64), steps // span)  # segment's place in `table`
        rows = np.where(valid, place * span + steps % span, 0)
        picked = table[torch.from_numpy(rows).to(table.device)]
        picked[torch.from_numpy(~valid).to(table.device)] = 0  # padding
        return picked

    def _refresh(self, k: int, audio: np.ndarray) -> None:
        """Encode segment k again if more of its audio has been heard than its last pass saw."""
        begin = k * self.model.window_samples
        heard = min(audio.size, begin + self.model.window_samples) - begin
        kept = self._segments.get(k)
        if kept is not None and kept.heard >= heard:
            return
        self._segments[k] = _Segment(self.model.encode_audio(audio[begin : begin + heard]), heard)
        self.passes += 1

    def _let_go_before(self, step: int) -> None:
        if step > self._base:
            self._base = step
            for k in [k for k in self._segments if (k + 1) * self.model.window_steps <= step]:
                del self._segments[k]
