"""Where each video frame's audio lives on the Whisper encoder's time grid.

The Whisper encoder emits one step per 20 ms (50 Hz). MuseTalk conditions frame f on a window of
10 steps (200 ms): 4 steps (80 ms) before the step holding the frame's start, that step, and 5
after, so the window ends 120 ms after the frame start at 25 fps. Upstream computes the start as
floor(f * 50 / fps) with fps truncated to an int and a left pad that grows with 50/fps, which
shifts the window at any rate other than 25. Here the start is computed with exact rational
arithmetic and the window is always anchored 4 steps before the frame's step, so 30 fps (or
30000/1001) lines up as well as 25 does, and frame 10**7 is as exact as frame 1.

Frame numbers here count from the first frame of an utterance; step 0 is that frame's start.
Steps before 0 or after the utterance's end are padding (zero features), as upstream pads clips.
"""

from __future__ import annotations

from fractions import Fraction

ENCODER_RATE = 16_000  # Whisper's input sample rate
STEPS_PER_SECOND = 50  # encoder output rate: one step per 20 ms
SAMPLES_PER_STEP = ENCODER_RATE // STEPS_PER_SECOND  # 320
WINDOW_STEPS = 10  # steps of audio per video frame (200 ms)
STEPS_BEFORE = 4  # steps of the window before the frame's own step (80 ms)
LAYERS = 5  # encoder hidden states stacked per step (input embedding + 4 layers)
TOKENS_PER_FRAME = WINDOW_STEPS * LAYERS  # 50 cross-attention tokens per frame

# The last step of a window ends this long after the frame start (exactly, at 25 fps; at most,
# at rates where frames start mid-step). Frames wait for this much future audio.
LOOKAHEAD_SECONDS = (WINDOW_STEPS - STEPS_BEFORE) / STEPS_PER_SECOND  # 0.12


def frame_start_step(frame: int, fps: int | Fraction) -> int:
    """The encoder step holding frame `frame`'s start: floor(frame * 50 / fps), exactly."""
    if frame < 0:
        raise ValueError(f"frame must be >= 0, got {frame}")
    rate = Fraction(fps)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return (frame * STEPS_PER_SECOND * rate.denominator) // rate.numerator


def audio_steps_for_frame(frame: int, fps: int | Fraction) -> range:
    """The 10 encoder steps (may reach below 0) that condition frame `frame` of an utterance."""
    start = frame_start_step(frame, fps) - STEPS_BEFORE
    return range(start, start + WINDOW_STEPS)


def steps_in_samples(n_samples: int) -> int:
    """Whole encoder steps covered by n_samples at 16 kHz (a partial last step is dropped)."""
    return n_samples // SAMPLES_PER_STEP
