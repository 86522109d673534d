"""The streaming engine: one frame per slot in order, look-ahead, silence, interruption."""

import gc
import logging
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest

from poc.face.avatar import Avatar
from poc.face.base import EngineError, RenderedFrame, SpeechSlot
from poc.face.musetalk.engine import MuseTalkEngine

from .conftest import voiced
from .on_device import DEVICE

# Builds and runs MuseTalk's networks on the CPU: left out of the fast lane (README, Tests).
pytestmark = pytest.mark.slow

RATE = 48000


@pytest.fixture(scope="module")
def engine(tiny_models: Path, avatar_video: Avatar, tmp_path_factory: pytest.TempPathFactory) -> MuseTalkEngine:
    return MuseTalkEngine(avatar_video, tiny_models, DEVICE, 6, 25, RATE, cache_dir=tmp_path_factory.mktemp("cache"))


def slots_for(audio: np.ndarray, fps: int, rate: int, first_index: int) -> list[SpeechSlot]:
    """Cut audio into per-frame slots exactly as the compositor does (cumulative rounding)."""
    n = int(len(audio) * fps // rate)
    bounds = [i * rate // fps for i in range(n + 1)]
    return [SpeechSlot(index=first_index + i, audio=audio[bounds[i] : bounds[i + 1]]) for i in range(n)]


def feed_in_pieces(utterance, slots: list[SpeechSlot], sizes: list[int]) -> tuple[list[RenderedFrame], list[int]]:
    out, returned, i, k = [], [], 0, 0
    while i < len(slots):
        piece = slots[i : i + sizes[k % len(sizes)]]
        got = utterance.feed(piece)
        returned.append(len(got))
        out += got
        i += len(piece)
        k += 1
    out += utterance.finish()
    return out, returned


def test_one_frame_per_slot_in_order_for_uneven_pieces(engine: MuseTalkEngine, avatar_video: Avatar) -> None:
    slots = slots_for(voiced(RATE, RATE), 25, RATE, first_index=1001)  # 25 frames
    frames, returned = feed_in_pieces(engine.start_utterance(), slots, [1, 7, 2, 13, 3])
    assert [f.index for f in frames] == [s.index for s in slots]
    assert all(f.patch is not None for f in frames)
    assert returned[0] == 0  # the first frame waits for its 120 ms of future audio
    w, h = avatar_video.size
    for f in frames:
        p = f.patch
        assert 0 <= p.x and p.x + p.width <= w and 0 <= p.y and p.y + p.height <= h
        assert p.pixels.dtype == np.uint8 and p.pixels.shape[2] == 3


def test_patches_are_drawn_on_the_body_frame_of_their_counter(engine: MuseTalkEngine, avatar_video: Avatar) -> None:
    slots = slots_for(voiced(RATE // 2, RATE), 25, RATE, first_index=7)
    u = engine.start_utterance()
    frames = u.feed(slots) + u.finish()
    for f in frames:
        number = avatar_video.frame_number(f.index)
        g = engine.prepared.geometry[number]
        x, y, w, h = g.paste
        assert (f.patch.x, f.patch.y) == (x, y)
        body = avatar_video.frame_at(f.index)[y : y + h, x : x + w]
        outside = g.mask == 0
        np.testing.assert_array_equal(f.patch.pixels[outside], body[outside])


def test_frames_wait_only_for_their_lookahead(engine: MuseTalkEngine) -> None:
    slots = slots_for(voiced(RATE, RATE), 25, RATE, first_index=0)
    u = engine.start_utterance()
    assert u.feed(slots[:3]) == []  # 120 ms fed: frame 0 needs audio up to 120 ms plus filter lag
    got = u.feed(slots[3:10])  # 400 ms fed: frames whose window ends by then
    assert [f.index for f in got] == list(range(7))
    rest = u.feed(slots[10:]) + u.finish()
    assert [f.index for f in rest] == list(range(7, 25))


def test_silent_windows_skip_the_model(engine: MuseTalkEngine) -> None:
    def rows_run() -> int:  # rows of this station through the model so far (pad rows not counted)
        return engine.batching.rows.get(engine.station, 0)

    before = rows_run()
    silence = np.zeros(RATE, np.int16)
    u = engine.start_utterance()
    frames = u.feed(slots_for(silence, 25, RATE, 0)) + u.finish()
    assert len(frames) == 25 and all(f.patch is None for f in frames)
    assert rows_run() == before

    # 0.5 s of silence, then speech: frames whose window (from 80 ms before to 120 ms after the
    # frame start) holds no speech stay idle; from frame 10 (400 ms) the window reaches 520 ms
    audio = np.concatenate([np.zeros(RATE // 2, np.int16), voiced(RATE // 2, RATE)])
    u = engine.start_utterance()
    frames = u.feed(slots_for(audio, 25, RATE, 0)) + u.finish()
    idle = [f.index for f in frames if f.patch is None]
    assert idle == list(range(10))
    assert rows_run() == before + 15


def test_a_pause_inside_speech_never_shows_the_raw_face(engine: MuseTalkEngine) -> None:
    """Every frame from the first to the last voiced one goes through the model, however the
    slots are fed: a 300-ms pause between words must not switch the lower face to the photo."""
    speech = voiced(RATE * 3 // 5, RATE)
    audio = np.concatenate([speech, np.zeros(RATE * 3 // 10, np.int16), speech])  # 1.5 s: frames 0..37
    slots = slots_for(audio, 25, RATE, first_index=0)
    for sizes in ([len(slots)], [1], [5, 2, 9]):
        frames, _ = feed_in_pieces(engine.start_utterance(), slots, sizes)
        assert [f.index for f in frames] == list(range(len(slots)))
        idle = [f.index for f in frames if f.patch is None]
        assert idle == [], f"raw face at frames {idle} when fed in pieces of {sizes}"


def test_trailing_silence_held_at_finish_shows_the_idle_face(engine: MuseTalkEngine) -> None:
    """Frames after the last voiced one that are still held back when finish() comes are
    trailing silence: they skip the model. Frames returned before finish() could not know that
    speech would not resume, so they went through the model."""
    audio = np.concatenate([voiced(RATE // 2, RATE), np.zeros(RATE * 2 // 5, np.int16)])  # frames 0..21, speech to 12
    slots = slots_for(audio, 25, RATE, first_index=0)
    u = engine.start_utterance()
    early = u.feed(slots)
    late = u.finish()
    assert all(f.patch is not None for f in early)
    assert late and all(f.patch is None for f in late)
    assert len(early) + len(late) == len(slots)


def test_30fps_at_44100_hz_gives_one_frame_per_slot(tiny_models: Path, avatar_still: Avatar, tmp_path: Path) -> None:
    e30 = MuseTalkEngine(avatar_still, tiny_models, DEVICE, 8, 30, 44100, cache_dir=tmp_path)
    slots = slots_for(voiced(44100 * 2 // 3, 44100), 30, 44100, first_index=5)  # 20 frames
    assert {len(s.audio) for s in slots} == {1470}
    frames, _ = feed_in_pieces(e30.start_utterance(), slots, [4, 9])
    assert [f.index for f in frames] == [s.index for s in slots]
    e30.close()


def test_dropping_an_utterance_leaves_no_running_work(engine: MuseTalkEngine) -> None:
    threads = set(threading.enumerate())
    slots = slots_for(voiced(RATE, RATE), 25, RATE, 0)
    u = engine.start_utterance()
    u.feed(slots[:12])
    ref = weakref.ref(u)
    del u  # an interrupt: the pipeline just forgets the utterance
    gc.collect()
    assert ref() is None
    assert set(threading.enumerate()) == threads
    u2 = engine.start_utterance()  # and the next message renders from a clean slate
    frames = u2.feed(slots) + u2.finish()
    assert [f.index for f in frames] == list(range(25))


def test_feed_after_finish_is_an_error_and_finish_is_idempotent(engine: MuseTalkEngine) -> None:
    u = engine.start_utterance()
    fed = u.feed(slots_for(voiced(RATE // 5, RATE), 25, RATE, 0))
    assert len(fed) < 5 and len(fed) + len(u.finish()) == 5
    assert u.finish() == []
    with pytest.raises(RuntimeError):
        u.feed([])


def test_stereo_audio_is_refused_clearly(engine: MuseTalkEngine) -> None:
    with pytest.raises(ValueError, match="mono"):
        engine.start_utterance().feed([SpeechSlot(index=0, audio=np.zeros((1920, 2), np.int16))])


def test_warm_up_measures_and_sets_the_lead(engine: MuseTalkEngine, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="poc.face.musetalk.engine"):
        fps = engine.warm_up()
    assert fps > 0 and engine.measured_fps == fps
    assert engine.lead_seconds == pytest.approx(6 / fps + 0.12, abs=0.01)
    assert any("frames/s at batch 6" in r.getMessage() and "needs 25 fps" in r.getMessage() for r in caplog.records)


def test_a_closed_engine_starts_nothing(tiny_models: Path, avatar_still: Avatar, tmp_path: Path) -> None:
    e = MuseTalkEngine(avatar_still, tiny_models, DEVICE, 2, 25, RATE, cache_dir=tmp_path)
    assert e.lead_seconds == pytest.approx(2 / 25 + 0.12, abs=0.01)  # before warm-up: a batch of real time
    assert (tmp_path / e.prepared.key / "meta.json").is_file()
    e.close()
    with pytest.raises(EngineError, match="closed"):
        e.start_utterance()


def test_bad_engine_arguments_are_start_up_errors(tiny_models: Path, avatar_still: Avatar) -> None:
    with pytest.raises(EngineError, match="batch size"):
        MuseTalkEngine(avatar_still, tiny_models, DEVICE, 0, 25, RATE)
    with pytest.raises(EngineError, match="fps"):
        MuseTalkEngine(avatar_still, tiny_models, DEVICE, 4, 0, RATE)


def test_window_steps_outside_the_utterance_are_zero_padding(engine: MuseTalkEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Frame 0's window starts 4 steps (80 ms) before the audio, the last frame's ends 4 steps
    after it: exactly the tokens of steps outside the audio carry only the position code."""
    import torch

    from poc.face.musetalk.model import positional_encoding

    seen = []
    model = engine._renderer.model
    real = model.unet_step
    monkeypatch.setattr(model, "unet_step", lambda lat, tok: seen.append(tok.clone()) or real(lat, tok))
    batches_before = engine.batching.batches
    u = engine.start_utterance()
    frames = u.feed(slots_for(voiced(RATE * 2 // 5, RATE), 25, RATE, 0)) + u.finish()  # 10 frames, 20 steps
    assert len(frames) == 10
    counters = engine.batching
    batches = list(counters.recent)[len(counters.recent) - (counters.batches - batches_before) :]
    real_rows = [sum(n for _, n in batch) for batch in batches]  # each run is padded past these
    assert len(seen) == len(real_rows) and sum(real_rows) == 10
    tokens = torch.cat([run[:n] for run, n in zip(seen, real_rows)])
    pe = torch.from_numpy(positional_encoding(50, 384)).to(tokens)  # the model's rounding, on its device
    padded = (tokens - pe).abs().amax(dim=2) == 0  # (frame, token): nothing but the position code
    for f in range(10):  # frame f's window is steps 2f-4 .. 2f+5; the audio has steps 0..19
        before, after = max(0, 4 - 2 * f), max(0, 2 * f + 6 - 20)
        expected = [True] * 5 * before + [False] * 5 * (10 - before - after) + [True] * 5 * after
        assert padded[f].tolist() == expected, f


def test_a_model_failure_still_gives_one_idle_frame_per_slot(engine: MuseTalkEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    model = engine._renderer.model
    real, calls = model.unet_step, []

    def flaky(latents, tokens):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(latents, tokens)

    monkeypatch.setattr(model, "unet_step", flaky)
    slots = slots_for(voiced(RATE, RATE), 25, RATE, first_index=50)
    u = engine.start_utterance()
    frames, _ = feed_in_pieces(u, slots, [6])
    assert [f.index for f in frames] == [s.index for s in slots]
    assert u.failures == 1
    idle = [f for f in frames if f.patch is None]
    assert 0 < len(idle) <= 6
