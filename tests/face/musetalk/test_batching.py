"""Cross-station batching with the tiny MuseTalk weights on the CPU: two stations talking at the
same time get batches holding frames of both, and each station's faces are the ones it renders
alone with the same input.

Why "the same" is a tolerance and not bitwise: rows never mix in the UNet or the VAE (the batch
dimension), but on the CPU torch picks its conv/GEMM kernels by problem size, and the batch size
is part of it. With these weights, rows come out bitwise equal between batches of 2 to 5 rows,
and differ by ~2e-6 (float32 rounding) from the same rows in a batch of 1 or of 6 or more. So
the UNet's output agrees to 1e-5 whatever the company, and a decoded face to one 8-bit level
(a rounding boundary may fall between the two); swapped or mixed-up rows would differ by far more.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from poc.face.avatar import Avatar
from poc.face.base import RenderedFrame, SpeechSlot
from poc.face.musetalk.engine import MuseTalkEngine
from poc.face.musetalk.model import MuseTalkModel, load_model
from poc.face.musetalk.render import FaceRow, unet_and_decode
from poc.face.musetalk.shared import SharedModels

from .conftest import voiced
from .on_device import DEVICE

# Builds and runs MuseTalk's networks on the CPU: left out of the fast lane (README, Tests).
pytestmark = pytest.mark.slow

RATE, FPS, BATCH = 48000, 25, 4
FRAMES = 10  # fed at once: 7 are ready at once (120 ms look-ahead), 3 more at finish()
LATENT_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def model(tiny_models: Path) -> MuseTalkModel:
    return load_model(tiny_models, DEVICE)


def rows(model: MuseTalkModel, n: int, seed: int) -> list[FaceRow]:
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(n, 8, 32, 32, generator=g).to(model.device)
    tokens = model.audio_tokens(torch.randn(n, 10, 5, 384, generator=g).to(model.device))
    return [FaceRow(latents=latents[k], tokens=tokens[k]) for k in range(n)]


def unet(model: MuseTalkModel, batch: list[FaceRow]) -> torch.Tensor:
    with torch.inference_mode():
        return model.unet_step(torch.stack([r.latents for r in batch]), torch.stack([r.tokens for r in batch]))


def test_a_row_is_the_same_whatever_shares_its_batch(model: MuseTalkModel) -> None:
    a, b = rows(model, 3, seed=1), rows(model, 5, seed=2)
    alone = unet(model, a)
    for company in ([*b[:2], *a], [a[0], b[0], a[1], b[1], a[2]], [*a, *b]):  # 5 and 8 rows
        together = unet(model, company)
        mine = together[[k for k, r in enumerate(company) if any(r is x for x in a)]]
        torch.testing.assert_close(mine, alone, rtol=0, atol=LATENT_TOLERANCE)
    singles = torch.cat([unet(model, [r]) for r in a])  # batches of 1: another kernel size class
    torch.testing.assert_close(singles, alone, rtol=0, atol=LATENT_TOLERANCE)
    assert (unet(model, b) - alone[:1]).abs().max() > 0.1  # other rows really are other faces

    faces_alone = np.stack(unet_and_decode(model, a))
    faces_mixed = np.stack(unet_and_decode(model, [b[0], a[0], b[1], a[1], a[2], b[2]]))[[1, 3, 4]]
    assert np.abs(faces_alone.astype(np.int16) - faces_mixed.astype(np.int16)).max() <= 1


def slots(first_index: int) -> list[SpeechSlot]:
    audio = voiced(RATE * FRAMES // FPS, RATE)
    step = RATE // FPS
    return [SpeechSlot(index=first_index + i, audio=audio[i * step : (i + 1) * step]) for i in range(FRAMES)]


def speak(engine: MuseTalkEngine, first_index: int) -> list[RenderedFrame]:
    u = engine.start_utterance()
    frames = u.feed(slots(first_index)) + u.finish()
    assert u.failures == 0
    return frames


def assert_same_faces(got: list[RenderedFrame], want: list[RenderedFrame]) -> None:
    assert [f.index for f in got] == [f.index for f in want]
    for g, w in zip(got, want):
        assert g.patch is not None and w.patch is not None
        assert (g.patch.x, g.patch.y, g.patch.pixels.shape) == (w.patch.x, w.patch.y, w.patch.pixels.shape)
        diff = np.abs(g.patch.pixels.astype(np.int16) - w.patch.pixels.astype(np.int16))
        assert diff.max() <= 1, f"frame {g.index}: faces differ by up to {diff.max()} levels"


def test_two_stations_talking_at_once_share_batches_and_keep_their_own_faces(
    tiny_models: Path, avatar_still: Avatar, avatar_video: Avatar, tmp_path: Path
) -> None:
    models = SharedModels()
    north = MuseTalkEngine(avatar_video, tiny_models, DEVICE, BATCH, FPS, RATE, cache_dir=tmp_path, models=models, station="north")
    south = MuseTalkEngine(avatar_still, tiny_models, DEVICE, BATCH, FPS, RATE, cache_dir=tmp_path, models=models, station="south")
    try:
        # alone: one station after the other, so no batch holds both
        alone = {"north": speak(north, 0), "south": speak(south, 5000)}
        before = north.batching
        assert before.mixed_batches == 0 and all(len(b) == 1 for b in before.recent)
        assert [b[0][1] for b in before.recent] == [4, 3, 3] * 2  # each alone: 7 ready as 4 + 3, then 3

        together: dict[str, list[RenderedFrame]] = {}
        errors: list[BaseException] = []
        start = threading.Barrier(2)

        def station(engine: MuseTalkEngine, first_index: int) -> None:
            try:
                start.wait()
                together[engine.station] = speak(engine, first_index)
            except BaseException as e:  # reported below rather than lost in the thread
                errors.append(e)

        threads = [threading.Thread(target=station, args=(north, 0)), threading.Thread(target=station, args=(south, 5000))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
        assert errors == [] and not any(t.is_alive() for t in threads)

        after = north.batching
        batches = list(after.recent)[len(before.recent) :]
        mixed = [b for b in batches if {s for s, _ in b} == {"north", "south"}]
        assert mixed, f"no batch held frames of both stations: {batches}"
        assert all(sum(n for _, n in b) <= BATCH for b in batches)
        assert after.rows == {"north": 2 * FRAMES, "south": 2 * FRAMES}
        assert after.mixed_batches == len(mixed)
        for name in ("north", "south"):
            assert_same_faces(together[name], alone[name])
    finally:
        north.close()
        south.close()
