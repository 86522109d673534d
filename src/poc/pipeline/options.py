"""The pipeline's tunables (the stream's rate and frame rate come from the compositor)."""

from __future__ import annotations

from typing import Callable

import attrs
import numpy as np

# (data, format, sample rate, longest seconds) -> int16 mono samples; ValueError if it cannot.
AudioDecoder = Callable[[bytes, str, int, float], np.ndarray]


@attrs.frozen
class PipelineOptions:
    ahead_seconds: float = 30.0  # speech prepared ahead of the clock, at most (media seconds)
    gap_seconds: float = 0.3  # the pause between two messages
    max_audio_seconds: float = 60.0  # an audio message longer than this is dead-lettered
    # An engine whose faces improve with later speech (MuseTalk) renders a frame about this long
    # before it is shown, or its batch's lead time if longer; speech heard by then shapes it.
    render_ahead_seconds: float = 1.0
