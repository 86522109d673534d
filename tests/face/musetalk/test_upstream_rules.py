"""MuseTalk's rules for what the UNet sees, written here from the research notes (never from
upstream's code) and checked against the engine end to end:

- Audio window: video frame f at `fps` is conditioned on the 10 Whisper encoder steps (20 ms each)
  starting at floor(f * 50 / fps) - 4; each step brings the encoder's 5 hidden states (input
  embedding, layers 1-3, the final layer after its layer norm), stacked and flattened time-major to
  50 tokens of 384, plus the sinusoid position code. Steps outside the audio are zeros.
- UNet input: 8 channels, first the VAE latent (posterior mode x 0.18215) of the RGB crop scaled
  to [-1, 1] with its lower half (rows 128-255) set to -1, then the latent of the whole crop.
- Crop box (68 landmarks, 0-based): x from the landmarks' extreme x, bottom at the lowest landmark,
  top as far above the nose-bridge point 29 (shifted by bbox_shift, 0 in v1.5) as the bottom is
  below it, clipped at the frame's top; then 10 px more at the bottom (v1.5), capped at the frame;
  the box squashed to 256x256 with Lanczos.

test_timing.py pins the step arithmetic alone and test_engine.py which tokens are padding at 25
fps; here the tokens the UNet receives are compared value by value with the rule, at 25 and 30 fps.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from poc.face.avatar import Avatar, load_avatar
from poc.face.landmarks import detect_landmarks
from poc.face.musetalk.geometry import MIN_BOX, crop_face, face_box
from poc.face.musetalk.model import MuseTalkModel, load_model
from poc.face.musetalk.prepare import PreparedAvatar, build_prepared
from poc.face.musetalk.render import FrameRenderer
from poc.paths import DEFAULT_AVATAR

from .conftest import voiced
from .on_device import DEVICE

RATE = 16_000
SAMPLES_PER_STEP = RATE // 50  # one encoder step per 20 ms
SCALE = 0.18215  # the SD VAE's latent scale (sd-vae-ft-mse's config sets none)


def sinusoid(length: int, width: int) -> torch.Tensor:
    """Transformer position code: even columns sin(p / 10000^(2i/width)), odd columns cos."""
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    rates = 10000.0 ** (-torch.arange(0, width, 2, dtype=torch.float64) / width)
    table = torch.zeros(length, width, dtype=torch.float64)
    table[:, 0::2], table[:, 1::2] = torch.sin(pos * rates), torch.cos(pos * rates)
    return table.float()


def upstream_box(lm: np.ndarray, width: int, height: int, bbox_shift: int = 0, margin: int = 10) -> tuple[int, ...]:
    """The crop rule as the notes state it, for integer landmarks that upstream would accept."""
    ym = int(lm[29, 1]) + bbox_shift
    y2 = int(lm[:, 1].max())
    y1 = max(0, ym - (y2 - ym))
    x1, x2 = int(lm[:, 0].min()), int(lm[:, 0].max())
    return x1, y1, x2, min(y2 + margin, height)


# --- model-backed rules (tiny random weights in the real layout) -------------------------------


@pytest.fixture(scope="module")
def model(tiny_models: Path) -> MuseTalkModel:
    return load_model(tiny_models, DEVICE)


@pytest.fixture(scope="module")
def prepared(model: MuseTalkModel, avatar_still: Avatar) -> PreparedAvatar:
    return build_prepared(avatar_still, model.codec.encode_reference, "upstream-rules")


def encoder_states(model: MuseTalkModel, audio: np.ndarray) -> torch.Tensor:
    """(steps, 5, 384): the encoder's 5 hidden states per 20-ms step of `audio`."""
    steps = audio.size // SAMPLES_PER_STEP
    mel = model.feature_extractor(audio[: steps * SAMPLES_PER_STEP], sampling_rate=RATE, return_tensors="pt").input_features
    with torch.inference_mode():
        states = model.audio_encoder(mel.to(model.device, model.dtype), output_hidden_states=True).hidden_states
    assert len(states) == 5
    return torch.stack(states, dim=2)[0, :steps]


@pytest.mark.slow  # runs the tiny networks
@pytest.mark.parametrize(
    ("fps", "frames"),
    [
        (25, [0, 1, 2, 3, 12, 24]),  # starts 2f - 4: frames 0-1 reach before the audio, 24 past its end
        (30, [0, 1, 2, 3, 4, 29]),  # fractional starts 1.67, 3.33, 5, 6.67 steps; 29 ends past the audio
    ],
)
def test_each_frame_gets_its_10_step_window_of_5_stacked_states(
    model: MuseTalkModel, prepared: PreparedAvatar, avatar_still: Avatar, monkeypatch: pytest.MonkeyPatch,
    fps: int, frames: list[int],
) -> None:  # fmt: skip
    audio = voiced(RATE, RATE).astype(np.float32) / 32768  # 1 s: 50 encoder steps
    audio += np.random.default_rng(fps).normal(0, 0.05, audio.size).astype(np.float32)  # every step distinct
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = model.unet_step
    monkeypatch.setattr(model, "unet_step", lambda lat, tok: seen.append((lat.clone(), tok.clone())) or real(lat, tok))
    FrameRenderer(model, prepared, avatar_still, fps).render([(f, f) for f in frames], audio)

    ((latents, tokens),) = seen
    states = encoder_states(model, audio)
    pe = sinusoid(50, 384).to(tokens)  # in the model's dtype, on its device
    for row, f in enumerate(frames):
        start = f * 50 // fps - 4
        window = torch.stack([states[s] if 0 <= s < len(states) else states.new_zeros(5, 384) for s in range(start, start + 10)])
        torch.testing.assert_close(tokens[row], window.reshape(50, 384) + pe, msg=f"frame {f} at {fps} fps")
        # and the reference latent travels to the UNet as prepared, channel order intact
        torch.testing.assert_close(latents[row], torch.from_numpy(prepared.latents[avatar_still.frame_number(f)]).to(latents))


@pytest.mark.slow  # runs the tiny networks
def test_unet_input_is_the_masked_half_then_the_reference(model: MuseTalkModel, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    crop = np.zeros((1, 256, 256, 3), np.uint8)  # BGR with three different channels
    crop[..., 0] = rng.integers(0, 256, (256, 256))
    crop[..., 1] = np.linspace(0, 255, 256, dtype=np.uint8)[None, :]
    crop[..., 2] = np.linspace(255, 0, 256, dtype=np.uint8)[:, None]
    vae = model.codec.vae
    seen: list[torch.Tensor] = []
    real = vae.encode
    monkeypatch.setattr(vae, "encode", lambda x: seen.append(x.clone()) or real(x))
    latents = torch.from_numpy(model.codec.encode_reference(crop)).to(model.device)
    monkeypatch.undo()

    # pixels: RGB in [-1, 1]; the masked copy is -1 from row 128 down and the crop above it
    rgb = torch.from_numpy(crop[0, :, :, ::-1].copy()).permute(2, 0, 1).to(model.device, model.dtype) / 127.5 - 1
    masked = rgb.clone()
    masked[:, 128:] = -1.0
    (pixels,) = seen
    torch.testing.assert_close(pixels, torch.stack([masked, rgb]))

    def channels(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Posterior mode x scale of both images, the first's latent on channels 0-3."""
        with torch.inference_mode():
            z = vae.encode(torch.stack([first, second])).latent_dist.mode() * SCALE
        return torch.cat([z[:1], z[1:]], dim=1).float()

    assert model.codec.scaling == SCALE
    expected = channels(masked, rgb)
    # The engine's pixels are a permuted (channels-last) view, for which torch picks other
    # convolution kernels: equal up to float rounding (6e-4 of the latents' range here; a wrong
    # rule is off by the whole range, see below).
    size = latents.abs().max()
    torch.testing.assert_close(latents, expected, rtol=0, atol=2e-3 * size)

    # negative controls: the same check tells the halves swapped, or BGR fed for RGB, apart
    bgr = rgb.flip(0)
    bgr_masked = bgr.clone()
    bgr_masked[:, 128:] = -1.0
    for wrong in (channels(rgb, masked), channels(bgr_masked, bgr)):
        assert (latents - wrong).abs().max() > 0.1 * size

    # and the UNet's answer depends on the order: swapped halves give another face latent
    tokens = model.audio_tokens(torch.randn(1, 10, 5, 384, generator=torch.Generator().manual_seed(0)).to(model.device))
    right = model.unet_step(latents, tokens)
    crossed = model.unet_step(latents[:, [4, 5, 6, 7, 0, 1, 2, 3]], tokens)
    assert (right - crossed).abs().max() > 0.05 * right.abs().max()


# --- the crop rule (landmarks only) -------------------------------------------------------------


@st.composite
def faces(draw: st.DrawFn) -> tuple[np.ndarray, int, int]:
    """68 integer landmarks (as dlib gives them) of a face anywhere on a frame, near its edges too."""
    width, height = draw(st.sampled_from([(320, 180), (640, 360), (1280, 720)]))
    w = draw(st.integers(MIN_BOX, width // 2))
    h = draw(st.integers(MIN_BOX, height - 1))
    x0 = draw(st.integers(0, width - 1 - w))
    y0 = draw(st.integers(0, height - 1 - h))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    lm = np.stack([rng.integers(x0, x0 + w + 1, 68), rng.integers(y0, y0 + h + 1, 68)], axis=1)
    lm[29, 1] = draw(st.integers(y0, y0 + h))  # the nose bridge anywhere between top and chin
    return lm.astype(np.float32), width, height


@given(faces())
@settings(max_examples=300, deadline=None)
def test_the_crop_box_follows_upstreams_rule(face: tuple[np.ndarray, int, int]) -> None:
    lm, width, height = face
    box = upstream_box(lm, width, height)
    x1, y1, x2, y2 = box
    assume(x2 - x1 >= MIN_BOX and y2 - y1 >= MIN_BOX)  # smaller faces are refused (test_geometry.py)
    assert face_box(lm, width, height) == box


def test_the_default_avatar_is_cropped_by_the_rule_and_squashed_with_lanczos() -> None:
    frame = load_avatar(DEFAULT_AVATAR, 1280, 720).frames[0]
    lm = detect_landmarks(frame)
    assert np.array_equal(lm, np.round(lm))  # dlib's points are whole pixels: no rounding rule involved
    box = face_box(lm, 1280, 720)
    assert box == upstream_box(lm, 1280, 720)
    x1, y1, x2, y2 = box
    expected = cv2.resize(frame[y1:y2, x1:x2], (256, 256), interpolation=cv2.INTER_LANCZOS4)
    np.testing.assert_array_equal(crop_face(frame, box), expected)
    # a non-zero bbox_shift (v1.0's knob) would move the top by twice the shift: v1.5 keeps 0
    assert upstream_box(lm, 1280, 720, bbox_shift=3)[1] == y1 + 6
