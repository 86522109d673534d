"""Whisper while streaming: one encoder pass per arriving stretch of audio, not per batch, and
tokens close to those of encoding the whole utterance at once (upstream's "offline" features).

The tiny weights' encoder window is 3 s, a tenth of whisper-tiny's 30 s. With random weights the
attention spreads over the whole window, so a frame's features move with the share of the window
that the utterance's audio still to come would fill (measured in docs/musetalk.md: 3.4 % at the
first frame of a 2.8-s utterance, the same when every feed re-encodes all audio so far). The
utterance here is 0.5 s, the share of the window a 5-s utterance has under the real one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from poc.face.avatar import Avatar
from poc.face.base import SpeechSlot
from poc.face.musetalk.engine import MuseTalkEngine, MuseTalkUtterance
from poc.face.musetalk.features import LOOKAHEAD_STEPS, StreamedFeatures
from poc.face.musetalk.model import MuseTalkModel
from poc.face.musetalk.render import is_silent
from poc.face.musetalk.resample import StreamResampler
from poc.face.musetalk.timing import ENCODER_RATE, SAMPLES_PER_STEP, audio_steps_for_frame, steps_in_samples

from .test_engine import slots_for

# Builds and runs MuseTalk's networks on the CPU: left out of the fast lane (README, Tests).
pytestmark = pytest.mark.slow

RATE = 48000
BATCH = 4


def syllables(seconds: float, rate: int, seed: int) -> np.ndarray:
    """int16 speech-like audio: syllables of 120-300 ms on pitches of 90-240 Hz with their own
    harmonic weights, short gaps and now and then a pause, over faint noise (never silent)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    out = rng.normal(0, 0.02, n)
    at = 0.0
    while at < seconds:
        length, pitch = rng.uniform(0.12, 0.3), rng.uniform(90, 240)
        a, b = int(at * rate), min(n, int((at + length) * rate))
        tt = t[a:b] - at
        weights = rng.uniform(0.3, 1.0, 12)
        out[a:b] += np.sin(np.pi * tt / length) ** 2 * sum(w * np.sin(2 * np.pi * pitch * k * tt) / k for k, w in enumerate(weights, 1))
        at += length + (rng.uniform(0.25, 0.4) if rng.random() < 0.1 else rng.uniform(0.0, 0.05))
    return np.clip(0.75 * 32767 * out / np.abs(out).max(), -32768, 32767).astype(np.int16)


@pytest.fixture(scope="module", params=[25, 30])
def engine(
    request: pytest.FixtureRequest, tiny_models: Path, avatar_still: Avatar, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MuseTalkEngine]:
    cache = tmp_path_factory.mktemp("cache")
    e = MuseTalkEngine(avatar_still, tiny_models, "cpu", BATCH, request.param, RATE, cache_dir=cache)
    yield e
    e.close()


def feed(utterance: MuseTalkUtterance, slots: list[SpeechSlot], piece: int) -> int:
    """Feed the slots `piece` at a time, then finish; returns the number of arrivals (feeds + finish)."""
    for i in range(0, len(slots), piece):
        utterance.feed(slots[i : i + piece])
    utterance.finish()
    return -(-len(slots) // piece) + 1


def offline_features(model: MuseTalkModel, audio16: np.ndarray, fps: int, frames: int) -> torch.Tensor:
    """(frames, 10, 5, 384): the whole utterance in one encoder pass, each frame's window of
    steps, zeros outside the audio's whole steps."""
    limit = steps_in_samples(audio16.size)
    states = model.encode_audio(audio16)[:limit]
    zero = torch.zeros(5, 384, dtype=states.dtype)
    return torch.stack([
        torch.stack([states[s] if 0 <= s < limit else zero for s in audio_steps_for_frame(f, fps)]) for f in range(frames)
    ])  # fmt: skip


@pytest.mark.parametrize("piece", [1, BATCH])  # slot by slot, and in the pipeline's batch-size pieces
def test_streamed_tokens_stay_within_1_percent_of_offline(engine: MuseTalkEngine, monkeypatch: pytest.MonkeyPatch, piece: int) -> None:
    model = engine._renderer.model
    seen: list[torch.Tensor] = []
    real = model.audio_tokens
    monkeypatch.setattr(model, "audio_tokens", lambda windows: seen.append(windows.clone()) or real(windows))
    audio = syllables(0.5, RATE, seed=engine.fps)
    slots = slots_for(audio, engine.fps, RATE, first_index=0)
    feed(engine.start_utterance(), slots, piece)

    streamed = torch.cat(seen)
    assert streamed.shape[0] == len(slots)  # every frame went through the model, in order
    resampler = StreamResampler(RATE, ENCODER_RATE)
    resampler.push(np.concatenate([slot.audio for slot in slots]))  # what was fed, in one piece
    resampler.flush()
    audio16 = resampler.output
    offline = offline_features(model, audio16, engine.fps, len(slots))
    voiced = [f for f in range(len(slots)) if not is_silent(audio16, audio_steps_for_frame(f, engine.fps))]
    assert len(voiced) == len(slots)
    # relative difference per frame, on the audio features (the position code added to both
    # tokens would only shrink it)
    difference = (streamed - offline).flatten(1).norm(dim=1) / offline.flatten(1).norm(dim=1)
    worst = int(difference.argmax())
    assert difference.max() <= 0.01, f"frame {worst} differs by {100 * float(difference.max()):.2f} %"


def test_whisper_runs_once_per_arriving_stretch_not_once_per_batch(engine: MuseTalkEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    model = engine._renderer.model
    calls: list[int] = []
    real = model.encode_audio
    monkeypatch.setattr(model, "encode_audio", lambda samples: calls.append(samples.size) or real(samples))
    batches_before = engine.batching.batches_with.get(engine.station, 0)
    slots = slots_for(syllables(1.2, RATE, seed=7), engine.fps, RATE, first_index=100)
    u = engine.start_utterance()
    arrivals = feed(u, slots, piece=3 * BATCH)  # each piece is 3 batches' worth of frames

    batches = engine.batching.batches_with.get(engine.station, 0) - batches_before
    assert u.encoder_passes == len(calls) > 0
    assert len(calls) <= arrivals < batches, (len(calls), arrivals, batches)
    assert all(size <= model.window_samples for size in calls)


def test_a_request_wider_than_the_window_keeps_look_ahead_at_each_cut(engine: MuseTalkEngine) -> None:
    """More audio than one window (3 s here) at once, e.g. a long utterance finished in one go:
    one pass per window's worth, each step kept from a pass that saw LOOKAHEAD_STEPS of audio
    after it, none missing."""
    model = engine._renderer.model
    audio16 = syllables(4.0, ENCODER_RATE, seed=3).astype(np.float32) / 32768
    limit = steps_in_samples(audio16.size)  # 200 steps, the window holds 150
    features = StreamedFeatures(model)
    windows = [range(s, s + 10) for s in range(0, limit - 9)]
    got = features.windows(windows, audio16)[:, 0]  # (steps, 5, 384): each window's first step
    assert features.passes == 2
    cut = model.window_steps - LOOKAHEAD_STEPS  # the first pass (steps 0..149) keeps 0..139
    first_pass = model.encode_audio(audio16[: model.window_samples])
    torch.testing.assert_close(got[:cut], first_pass[:cut])
    w0 = limit - model.window_steps  # the second ends at the newest audio, a full window: steps 50..199
    second_pass = model.encode_audio(audio16[w0 * SAMPLES_PER_STEP :])
    torch.testing.assert_close(got[cut:], second_pass[cut - w0 : len(windows) - w0])
