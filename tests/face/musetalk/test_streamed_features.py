"""Whisper while streaming: each arriving stretch of audio encoded once, not once per batch, in
upstream's own 30-s segments; a frame rendered once its audio has all been heard gets exactly the
features of encoding the whole utterance at once (upstream's "offline" features), and one rendered
earlier stays close to them.

The metric for "close": per frame, the relative L2 difference of its (10, 5, 384) audio features
(the (50, 384) tokens before the position code, which is the same in both and would only shrink
it), worst frame of the utterance.

With random weights the attention spreads evenly over the whole encoder window, so a frame's
features move with the share of the window that the audio still to come would fill. The tiny
weights' window is 3 s, a tenth of whisper-tiny's 30 s, so they are held to 1 % only while an
utterance fills under half of it; the full-size window is held to it for a 4-s utterance. With
trained weights the audio still to come matters far more (test_real_whisper.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import anyio
import numpy as np
import pytest
import torch
import transformers

from poc.face.avatar import Avatar
from poc.face.base import SpeechSlot
from poc.face.musetalk.engine import MuseTalkEngine, MuseTalkUtterance
from poc.face.musetalk.shared import SharedModels
from poc.face.musetalk.features import StreamedFeatures
from poc.face.musetalk.model import MuseTalkModel
from poc.face.musetalk.random_weights import TINY_WHISPER
from poc.face.musetalk.render import is_silent
from poc.face.musetalk.resample import StreamResampler
from poc.face.musetalk.timing import ENCODER_RATE, SAMPLES_PER_STEP, audio_steps_for_frame, steps_in_samples
from poc.jobs import Job
from poc.media.compositor import Compositor
from poc.media.timeline import Schedule
from poc.messages import TextMessage
from poc.metrics import Metrics
from poc.pipeline import JobQueue, PipelineOptions
from poc.pipeline.face_stage import FaceStage, InFlight
from poc.pipeline.link import SpeechEnd, SpeechPart
from poc.speech.base import SpeechChunk
from poc.statechart import StreamChart

from .test_engine import slots_for
from .on_device import DEVICE

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
    # a model of its own: engines other tests leave seated on the process's shared model would
    # raise the batch limit to their batch size and change the batch counts asserted here
    e = MuseTalkEngine(avatar_still, tiny_models, DEVICE, BATCH, request.param, RATE, cache_dir=cache, models=SharedModels())
    yield e
    e.close()


@pytest.fixture(scope="module")
def full_window_engine(tiny_models: Path, avatar_still: Avatar, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MuseTalkEngine]:
    """The tiny layout with whisper-tiny's real encoder (random weights): its 30-s window and
    1536-wide layers; only the decoder, which MuseTalk never runs, stays tiny."""
    models = Path(shutil.copytree(tiny_models, tmp_path_factory.mktemp("full-window") / "models"))
    whisper_dir = models / "whisper"
    shutil.rmtree(whisper_dir)
    torch.manual_seed(2)
    config = {**TINY_WHISPER, "encoder_ffn_dim": 1536, "max_source_positions": 1500}
    whisper = transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(**{k: v for k, v in config.items() if k != "model_type"}))
    whisper.save_pretrained(whisper_dir)
    transformers.WhisperFeatureExtractor(feature_size=80, chunk_length=30).save_pretrained(whisper_dir)
    e = MuseTalkEngine(avatar_still, models, DEVICE, BATCH, 25, RATE, cache_dir=tmp_path_factory.mktemp("cache"))
    yield e
    e.close()


def feed(utterance: MuseTalkUtterance, slots: list[SpeechSlot], piece: int) -> int:
    """Feed the slots `piece` at a time, then finish; returns the number of arrivals (feeds + finish)."""
    for i in range(0, len(slots), piece):
        utterance.feed(slots[i : i + piece])
    utterance.finish()
    return -(-len(slots) // piece) + 1


def arrive(utterance: MuseTalkUtterance, slots: list[SpeechSlot], fps: int, stretches: list[float], piece: int) -> int:
    """As the face stage does with TTS chunks: each stretch (seconds; the last takes the rest)
    heard whole, then fed `piece` slots at a time; then finish. Returns the number of stretches."""
    bounds = [round(sum(stretches[:k]) * fps) for k in range(len(stretches))] + [len(slots)]
    for a, b in zip(bounds, bounds[1:]):
        utterance.hear(slots[a:b])
        for i in range(a, b, piece):
            utterance.feed(slots[i : min(b, i + piece)])
    utterance.finish()
    return len(stretches)


def offline_states(model: MuseTalkModel, audio16: np.ndarray) -> torch.Tensor:
    """(steps, 5, 384): upstream's encoding of the whole utterance, one encoder pass per
    window-long segment from its start, the steps concatenated, cut to the audio's whole steps."""
    span = model.window_samples
    states = torch.cat([model.encode_audio(audio16[a : a + span]) for a in range(0, audio16.size, span)])
    return states[: steps_in_samples(audio16.size)]


def offline_features(model: MuseTalkModel, audio16: np.ndarray, fps: int, frames: int) -> torch.Tensor:
    """(frames, 10, 5, 384): each frame's window of `offline_states`, zeros outside the audio's
    whole steps."""
    states = offline_states(model, audio16)
    limit = len(states)
    zero = states.new_zeros(5, 384)
    return torch.stack([
        torch.stack([states[s] if 0 <= s < limit else zero for s in audio_steps_for_frame(f, fps)]) for f in range(frames)
    ])  # fmt: skip


def worst_difference(engine: MuseTalkEngine, monkeypatch: pytest.MonkeyPatch, seconds: float, arrival) -> tuple[float, int]:
    """Speak `seconds` of syllables through a new utterance, `arrival(utterance, slots)`; the
    largest per-frame relative difference of its features from the offline ones, and its frame."""
    model = engine._renderer.model
    seen: list[torch.Tensor] = []
    real = model.audio_tokens
    monkeypatch.setattr(model, "audio_tokens", lambda windows: seen.append(windows.clone()) or real(windows))
    slots = slots_for(syllables(seconds, RATE, seed=engine.fps), engine.fps, RATE, first_index=0)
    arrival(engine.start_utterance(), slots)

    streamed = torch.cat(seen)
    assert streamed.shape[0] == len(slots)  # every frame went through the model, in order
    resampler = StreamResampler(RATE, ENCODER_RATE)
    resampler.push(np.concatenate([slot.audio for slot in slots]))  # what was fed, in one piece
    resampler.flush()
    audio16 = resampler.output
    offline = offline_features(model, audio16, engine.fps, len(slots))
    voiced = [f for f in range(len(slots)) if not is_silent(audio16, audio_steps_for_frame(f, engine.fps))]
    assert len(voiced) == len(slots)
    difference = (streamed - offline).flatten(1).norm(dim=1) / offline.flatten(1).norm(dim=1)
    return float(difference.max()), int(difference.argmax())


def test_streamed_tokens_fed_slot_by_slot_stay_within_1_percent_of_offline(engine: MuseTalkEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing heard ahead: each frame sees only its 120 ms of look-ahead (a 0.5-s utterance)."""
    worst, frame = worst_difference(engine, monkeypatch, 0.5, lambda u, slots: feed(u, slots, piece=1))
    assert worst <= 0.01, f"frame {frame} differs by {100 * worst:.2f} %"


def test_streamed_tokens_of_arriving_stretches_stay_within_1_percent_of_offline(engine: MuseTalkEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1.2-s utterance arriving as TTS chunks of 0.5 and 0.7 s, rendered in batch-size pieces."""
    worst, frame = worst_difference(engine, monkeypatch, 1.2, lambda u, slots: arrive(u, slots, engine.fps, [0.5, 0.7], BATCH))
    assert worst <= 0.01, f"frame {frame} differs by {100 * worst:.2f} %"


def test_streamed_tokens_stay_within_1_percent_of_offline_in_a_30_s_window(full_window_engine: MuseTalkEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """whisper-tiny's own window: a 4-s utterance in chunks of 0.5-1.5 s."""
    stretches = [0.6, 1.2, 0.8, 1.4]
    worst, frame = worst_difference(full_window_engine, monkeypatch, 4.0, lambda u, slots: arrive(u, slots, 25, stretches, BATCH))
    assert worst <= 0.01, f"frame {frame} differs by {100 * worst:.2f} %"


def test_whisper_runs_once_per_arriving_stretch_not_once_per_batch(engine: MuseTalkEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    model = engine._renderer.model
    calls: list[int] = []
    real = model.encode_audio
    monkeypatch.setattr(model, "encode_audio", lambda samples: calls.append(samples.size) or real(samples))
    batches_before = engine.batching.batches_with.get(engine.station, 0)
    slots = slots_for(syllables(1.6, RATE, seed=7), engine.fps, RATE, first_index=100)
    u = engine.start_utterance()
    stretches = arrive(u, slots, engine.fps, [0.5, 0.6, 0.5], BATCH)

    batches = engine.batching.batches_with.get(engine.station, 0) - batches_before
    # one pass per stretch, and one at finish for the last frames, which waited for the
    # resampler's tail; the batches are three times as many
    assert u.encoder_passes == len(calls) == stretches + 1, (len(calls), stretches)
    assert batches >= 3 * len(calls), (batches, len(calls))
    assert all(size <= model.window_samples for size in calls)


def test_fed_without_hearing_whisper_runs_at_most_once_per_feed(engine: MuseTalkEngine) -> None:
    slots = slots_for(syllables(1.2, RATE, seed=7), engine.fps, RATE, first_index=100)
    u = engine.start_utterance()
    arrivals = feed(u, slots, piece=3 * BATCH)
    assert 0 < u.encoder_passes <= arrivals


def test_steps_still_needed_are_encoded_again_with_the_audio_heard_since(engine: MuseTalkEngine) -> None:
    """Two stretches: the second request's steps come from a pass over both (the steps the
    first request's frames used are not needed again), so they are exactly the offline ones."""
    model = engine._renderer.model
    audio16 = syllables(1.2, ENCODER_RATE, seed=5).astype(np.float32) / 32768
    first, both = audio16[: 30 * SAMPLES_PER_STEP], audio16[: 60 * SAMPLES_PER_STEP]
    features = StreamedFeatures(model)
    early = features.windows([range(0, 10), range(10, 20)], first)
    late = features.windows([range(10, 20), range(20, 30)], both)
    assert features.passes == 2
    first_pass, second_pass = model.encode_audio(first), model.encode_audio(both)
    torch.testing.assert_close(early[1], first_pass[10:20])
    torch.testing.assert_close(late[0], second_pass[10:20])
    torch.testing.assert_close(late[1], second_pass[20:30])
    assert not torch.allclose(late[0], first_pass[10:20])  # the new audio changed them
    assert features.windows([range(20, 30)], both)[0].equal(late[1]) and features.passes == 2  # nothing new heard: no pass


def test_audio_longer_than_the_window_is_encoded_in_upstreams_segments(engine: MuseTalkEngine) -> None:
    """More audio than one window (3 s here) at once, e.g. a long utterance finished in one go:
    one pass per segment, each segment at its own place from the utterance's start, as upstream
    cuts a clip; a window across the cut takes its steps from both."""
    model = engine._renderer.model
    audio16 = syllables(4.0, ENCODER_RATE, seed=3).astype(np.float32) / 32768
    limit = steps_in_samples(audio16.size)  # 200 steps, the window holds 150
    features = StreamedFeatures(model)
    windows = [range(s, s + 10) for s in range(0, limit - 9)]
    got = features.windows(windows, audio16)[:, 0]  # (steps, 5, 384): each window's first step
    assert features.passes == 2
    cut = model.window_steps
    torch.testing.assert_close(got[:cut], model.encode_audio(audio16[: model.window_samples])[:cut])
    torch.testing.assert_close(got[cut:], model.encode_audio(audio16[model.window_samples :])[: len(windows) - cut])
    across = StreamedFeatures(model).windows([range(cut - 5, cut + 5)], audio16)[0]
    torch.testing.assert_close(across[4], got[cut - 1])
    torch.testing.assert_close(across[5], got[cut])


@pytest.mark.parametrize("seconds", [2.4, 7.0])
def test_frames_rendered_after_all_their_audio_is_heard_get_exactly_the_offline_features(
    engine: MuseTalkEngine, monkeypatch: pytest.MonkeyPatch, seconds: float
) -> None:
    """All the stretches heard before the first frame is fed (TTS ahead of the picture): every
    frame's features are upstream's, within one window and across segments (to float rounding:
    the resampler fed in stretches differs from one fed in one piece in the last bits)."""

    def hear_all_then_feed(utterance: MuseTalkUtterance, slots: list[SpeechSlot]) -> None:
        third = len(slots) // 3
        for a, b in [(0, third), (third, 2 * third), (2 * third, len(slots))]:
            utterance.hear(slots[a:b])
        feed(utterance, slots, BATCH)

    worst, frame = worst_difference(engine, monkeypatch, seconds, hear_all_then_feed)
    assert worst <= 1e-4, f"frame {frame} differs by {100 * worst:.4f} %"


def test_the_face_stage_hears_each_chunk_whole_one_whisper_pass_per_chunk(engine: MuseTalkEngine, avatar_still: Avatar) -> None:
    """The pipeline's face stage with MuseTalk: TTS chunks of 0.5, 0.6 and 0.5 s are each
    rendered in batch-size pieces, yet each costs one Whisper pass (plus one at the end for the
    frames that waited for the resampler's tail), and every slot gets its face."""
    metrics = Metrics()
    jobs = JobQueue(metrics)
    compositor = Compositor(avatar_still, StreamChart(has_pending=jobs.has_pending), Schedule(), RATE, engine.fps, metrics)
    stage = FaceStage(compositor, PipelineOptions(), metrics)
    stage.attach(engine)
    audio = syllables(1.6, RATE, seed=11)
    cuts = [0, int(0.5 * RATE), int(1.1 * RATE), audio.size]
    job = Job(message=TextMessage(type="text", data="words"), id="j")

    async def speak() -> InFlight:
        in_flight: dict[Job, InFlight] = {}
        for a, b in zip(cuts, cuts[1:]):
            await stage.take(in_flight, SpeechPart(job, SpeechChunk(audio=audio[a:b])))
        state = in_flight[job]
        await stage.take(in_flight, SpeechEnd(job))
        return state

    state = anyio.run(speak)
    assert stage.batch == BATCH
    assert state.utterance.encoder_passes == 3 + 1
    assert len(state.segment.patches) == len(state.segment.audio) == round(1.6 * engine.fps)  # a face per slot
    assert state.utterance.failures == 0 and all(patch is not None for patch in state.segment.patches.values())
