"""The MuseTalk v1.5 networks and the few tensor operations between them.

MuseTalk is not a diffusion sampler: one UNet forward at timestep 0 maps
(lower-half-masked face latent ‖ reference face latent) plus 50 audio tokens to the latent of
the face with a new mouth, which the SD VAE decodes. Audio tokens are Whisper-tiny encoder
states (input embedding + 4 layers = 5 per 20-ms step, 10 steps per frame) with a sinusoidal
position code added. Everything runs in one dtype: by default float16 on CUDA and float32 on
CPU; `TALKING_FACE_DTYPE` may pick bfloat16 (same speed as float16 on Ampere and newer, the range
of float32, so no overflow) or float32 instead.

The 3.4 GB UNet checkpoint is a raw state dict: the module is built on torch's `meta` device and
the (memory-mapped) tensors are assigned into it, strictly, so loading costs no random init and
no second copy.
"""

from __future__ import annotations

import importlib
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from poc.face.base import EngineError
from poc.face.musetalk import _deps, configs
from poc.face.musetalk.timing import ENCODER_RATE, LAYERS, SAMPLES_PER_STEP, TOKENS_PER_FRAME, WINDOW_STEPS
from poc.face.musetalk.weights import (
    UNET_CONFIG,
    UNET_WEIGHTS,
    VAE_CONFIG,
    WHISPER_CONFIG,
    load_state_dict,
    read_json,
    require_weights,
)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CROP = 256  # the face crop the model sees (and returns), in pixels
LATENT = CROP // 8  # 32
AUDIO_WIDTH = 384
DEFAULT_SCALING = 0.18215  # SD VAE latent scale (sd-vae-ft-mse's config does not set one)
DTYPES = ("auto", "float16", "bfloat16", "float32")


class NonFiniteError(EngineError):
    """A network gave NaN or inf (float16 overflow): the batch fails instead of showing garbage."""


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; an unusable choice is an EngineError."""
    torch = _deps.require("torch")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError(f"device {device!r} requested but torch sees no CUDA GPU (use --device cpu or auto)", setting="TALKING_FACE_DEVICE")
    try:
        torch.device(device)
    except RuntimeError as e:
        raise EngineError(f"unknown torch device {device!r}", setting="TALKING_FACE_DEVICE") from e
    return device


def resolve_dtype(device: str, name: str = "auto") -> "torch.dtype":
    """'auto' -> float16 on CUDA (tensor cores, half the memory), float32 elsewhere (half
    precision on a CPU is emulated and slower); an unknown name is an EngineError."""
    torch = _deps.require("torch")
    if name not in DTYPES:
        raise EngineError(f"unknown dtype {name!r} (use one of {', '.join(DTYPES)})", setting="TALKING_FACE_DTYPE")
    if name == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    # Before Ampere, CUDA emulates bfloat16 slowly or not at all: refuse at start-up instead.
    if name == "bfloat16" and device.startswith("cuda") and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise EngineError(
            "bfloat16 needs an Ampere or newer GPU; use float16 or float32 on this one", setting="TALKING_FACE_DTYPE"
        )
    return getattr(torch, name)


def positional_encoding(length: int, width: int) -> np.ndarray:
    """The standard sinusoid table: even columns sin(p / 10000^(2i/width)), odd columns cos."""
    pos = np.arange(length, dtype=np.float64)[:, None]
    rates = np.exp(-np.log(10000.0) * np.arange(0, width, 2, dtype=np.float64) / width)
    table = np.zeros((length, width), np.float64)
    table[:, 0::2] = np.sin(pos * rates)
    table[:, 1::2] = np.cos(pos * rates)
    return table.astype(np.float32)


class VaeCodec:
    """Faces <-> latents with the SD VAE (only this is needed to prepare an avatar)."""

    def __init__(self, vae: Any, device: str, dtype: str = "auto") -> None:
        torch = _deps.require("torch")
        self.torch = torch
        self.device = device
        self.dtype = resolve_dtype(device, dtype)
        self._warned_non_finite = False
        self._host_buffers = HostBufferPool(torch)
        self.vae = vae.to(device=device, dtype=self.dtype).eval()
        self.scaling = float(getattr(vae.config, "scaling_factor", None) or DEFAULT_SCALING)
        self.memory_format = torch.contiguous_format  # MuseTalkModel.tune may pick channels-last

    def encode_reference(self, crops_bgr: np.ndarray, batch: int = 8) -> np.ndarray:
        """Crops (N, 256, 256, 3) uint8 BGR -> (N, 8, 32, 32) float32: masked-lower-half ‖ full.

        The lower half is set to -1 (black after normalisation) as in training; latents are the
        posterior means, so a prepared avatar is deterministic.
        """
        torch = self.torch
        if crops_bgr.ndim != 4 or crops_bgr.shape[1:] != (CROP, CROP, 3):
            raise ValueError(f"expected (N, {CROP}, {CROP}, 3) crops, got {crops_bgr.shape}")
        out = []
        with torch.inference_mode():
            for i in range(0, len(crops_bgr), batch):
                rgb = torch.from_numpy(np.ascontiguousarray(crops_bgr[i : i + batch, :, :, ::-1]))
                x = rgb.to(self.device).permute(0, 3, 1, 2).to(self.dtype) / 127.5 - 1.0
                masked = x.clone()
                masked[:, :, CROP // 2 :, :] = -1.0
                both = self.vae.encode(torch.cat([masked, x])).latent_dist.mode() * self.scaling
                # a NaN here would be cached with the prepared avatar and spoil every later frame
                self._check_finite(both, "VAE encode")
                n = x.shape[0]
                out.append(torch.cat([both[:n], both[n:]], dim=1).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 8, LATENT, LATENT), np.float32)

    def decode(self, latents: "torch.Tensor") -> np.ndarray:
        """(B, 4, 32, 32) latents -> (B, 256, 256, 3) uint8 BGR faces on the host; blocks.

        NaN or inf from the UNet or the decoder (float16 overflow) raises NonFiniteError: clamp
        passes NaN through and casting NaN to uint8 gives arbitrary pixels, so without the check
        a broken face would reach the stream silently. Failing the batch instead lets the
        utterance count it and show the idle face, which is at least a face.
        """
        return self.collect(self.launch_decode(latents))

    def launch_decode(self, latents: "torch.Tensor") -> "DecodedFaces":
        """Queue the decode of (B, 4, 32, 32) latents, its uint8 conversion, the finiteness
        checks and the copy to the host, without waiting for the device; collect() gives the
        faces. On a CPU the work is done by the time this returns (same code, no CUDA calls).

        Why split: a copy to the host waits for the device, and so does `bool(tensor)`; done at
        the end of each batch they leave the GPU idle while the host copies, delivers and asks
        for the next batch. Split, the caller can queue the next batch before waiting for this
        one (poc.face.musetalk.batcher keeps two in flight). The NaN/inf checks are reduced on
        the device and travel back with the faces, so they cost no wait of their own. All on
        the current stream: the copy has to wait for its own batch's decode anyway, and the
        next batch queued behind it waits only for the copy, about 1.5 MB for 8 faces (well
        under a millisecond into pinned memory), so a stream of its own would buy nothing."""
        torch = self.torch
        with torch.inference_mode():
            latents = latents.to(self.dtype)
            scaled = (latents / self.scaling).contiguous(memory_format=self.memory_format)
            img = self.vae.decode(scaled).sample
            # one flag per stage, UNet first: NaN from the UNet makes the decode NaN as well
            finite = torch.stack([torch.isfinite(latents).all(), torch.isfinite(img).all()])
            img = ((img / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
            faces = img.permute(0, 2, 3, 1).flip(-1).contiguous()
            if faces.device.type != "cuda":  # computed already: .cpu() is a no-op on the CPU
                return DecodedFaces(faces.cpu(), finite.cpu())
            buffers = self._host_buffers.take(faces.shape, finite.shape)
            buffers.faces.copy_(faces, non_blocking=True)
            buffers.finite.copy_(finite, non_blocking=True)
            done = torch.cuda.Event()
            done.record(torch.cuda.current_stream(faces.device))
            return DecodedFaces(buffers.faces, buffers.finite, done=done, buffers=buffers)

    def collect(self, launched: "DecodedFaces") -> np.ndarray:
        """Wait for a launched decode and give its faces as a host array of their own; raise
        NonFiniteError if a stage gave NaN or inf (see decode)."""
        try:
            launched.wait()
            unet_ok, vae_ok = (bool(flag) for flag in launched.finite.tolist())
            if not unet_ok:
                self._non_finite("the UNet")
            if not vae_ok:
                self._non_finite("VAE decode")
            faces = launched.faces.numpy()
            # a pinned buffer is reused by a later batch: the caller gets a copy
            return faces.copy() if launched.buffers is not None else faces
        finally:
            if launched.buffers is not None:
                self._host_buffers.give_back(launched.buffers)
                launched.buffers = None

    def ready(self, launched: "DecodedFaces") -> bool:
        """Whether collect() would return without waiting for the device."""
        return launched.done is None or launched.done.query()

    def _check_finite(self, x: "torch.Tensor", stage: str) -> None:
        """Raise NonFiniteError when x holds NaN or inf (this waits for the device)."""
        if not bool(self.torch.isfinite(x).all()):
            self._non_finite(stage)

    def _non_finite(self, stage: str) -> None:
        """Raise NonFiniteError for this stage; the first time, also log a warning with the
        remedy (the per-batch errors that follow are logged by the caller)."""
        message = f"{stage} gave NaN or inf values in {self.dtype} on {self.device}"
        if not self._warned_non_finite:
            self._warned_non_finite = True
            hint = ""
            if self.dtype == self.torch.float16:
                hint = " (float16 overflow? try TALKING_FACE_DTYPE=bfloat16 or float32)"
            log.warning("MuseTalk: %s; such batches show the idle face%s", message, hint)
        raise NonFiniteError(message)


@attrs.define(eq=False)
class _HostBuffers:
    """Page-locked host memory for one batch's faces and flags: a copy from the GPU into
    pinned memory can run asynchronously (into pageable memory it cannot)."""

    faces: "torch.Tensor"
    finite: "torch.Tensor"


class HostBufferPool:
    """Pinned buffers per batch shape, reused: allocating pinned memory is slow (a driver
    call) and pins RAM for good, so each shape keeps as many as were ever in flight at once
    (two with the batcher's two-deep pipeline). Thread-safe."""

    def __init__(self, torch: Any) -> None:
        self._torch = torch
        self._free: dict[tuple[tuple[int, ...], tuple[int, ...]], list[_HostBuffers]] = {}
        self._lock = threading.Lock()

    def take(self, faces_shape: "torch.Size", finite_shape: "torch.Size") -> _HostBuffers:
        key = (tuple(faces_shape), tuple(finite_shape))
        with self._lock:
            free = self._free.setdefault(key, [])
            if free:
                return free.pop()
        torch = self._torch
        return _HostBuffers(
            faces=torch.empty(key[0], dtype=torch.uint8, pin_memory=True),
            finite=torch.empty(key[1], dtype=torch.bool, pin_memory=True),
        )

    def give_back(self, buffers: _HostBuffers) -> None:
        key = (tuple(buffers.faces.shape), tuple(buffers.finite.shape))
        with self._lock:
            self._free.setdefault(key, []).append(buffers)


@attrs.define(eq=False)
class DecodedFaces:
    """A launched decode (VaeCodec.launch_decode): faces (B, 256, 256, 3) uint8 BGR and the
    per-stage finite flags, on the host once `done` has passed (no event: already there)."""

    faces: "torch.Tensor"
    finite: "torch.Tensor"
    done: Any = None  # torch.cuda.Event
    buffers: _HostBuffers | None = None  # pinned buffers to hand back at collect

    def wait(self) -> None:
        if self.done is not None:
            self.done.synchronize()


class MuseTalkModel:
    """UNet + VAE + Whisper-tiny encoder on one device, ready for inference."""

    def __init__(self, unet: Any, codec: VaeCodec, audio_encoder: Any, feature_extractor: Any) -> None:
        torch = codec.torch
        self.torch = torch
        self.codec = codec
        self.device, self.dtype = codec.device, codec.dtype
        self.unet = unet.to(device=self.device, dtype=self.dtype).eval()
        self.audio_encoder = audio_encoder.to(device=self.device, dtype=self.dtype).eval()
        self.feature_extractor = feature_extractor
        # Whisper pads/cuts every input to one fixed window (30 s for whisper-tiny).
        self.window_steps = int(audio_encoder.config.max_source_positions)
        self.window_samples = int(feature_extractor.n_samples)
        if self.window_samples != self.window_steps * SAMPLES_PER_STEP:
            raise EngineError(
                f"whisper preprocessor window ({self.window_samples} samples) does not match the encoder's "
                f"{self.window_steps} steps of {SAMPLES_PER_STEP} samples"
            )
        # t is always 0: make the timestep tensor once, on the device.
        self._timestep = torch.zeros(1, dtype=torch.long, device=self.device)
        pe = positional_encoding(TOKENS_PER_FRAME, AUDIO_WIDTH)
        self._pe = torch.from_numpy(pe).to(device=self.device, dtype=self.dtype)

    def encode_audio(self, samples: np.ndarray) -> "torch.Tensor":
        """16 kHz mono float samples (at most one encoder window) -> (steps, 5, 384) on device,
        one row per 20 ms of the window (rows past the samples' end describe the padding)."""
        torch = self.torch
        if samples.size > self.window_samples:
            raise ValueError(f"{samples.size} samples exceed the encoder window of {self.window_samples}")
        fe_device = "cuda" if self.device.startswith("cuda") else "cpu"
        mel = self.feature_extractor(
            samples.astype(np.float32), sampling_rate=ENCODER_RATE, return_tensors="pt", device=fe_device
        ).input_features
        with torch.inference_mode():
            out = self.audio_encoder(mel.to(self.device, self.dtype), output_hidden_states=True)
            states = out.hidden_states
            if len(states) != LAYERS:
                raise EngineError(f"whisper encoder gave {len(states)} hidden states, MuseTalk needs {LAYERS}")
            return torch.stack(states, dim=2)[0]

    def audio_tokens(self, windows: "torch.Tensor") -> "torch.Tensor":
        """(B, 10, 5, 384) per-frame windows -> (B, 50, 384) time-major tokens + position code."""
        b = windows.shape[0]
        if tuple(windows.shape[1:]) != (WINDOW_STEPS, LAYERS, AUDIO_WIDTH):
            raise ValueError(f"expected (B, {WINDOW_STEPS}, {LAYERS}, {AUDIO_WIDTH}) windows, got {tuple(windows.shape)}")
        return windows.reshape(b, TOKENS_PER_FRAME, AUDIO_WIDTH).to(self.dtype) + self._pe

    def unet_step(self, latents: "torch.Tensor", tokens: "torch.Tensor") -> "torch.Tensor":
        """(B, 8, 32, 32) reference latents + (B, 50, 384) tokens -> (B, 4, 32, 32) face latents."""
        with self.torch.inference_mode():
            latents = latents.to(self.dtype).contiguous(memory_format=self.codec.memory_format)
            return self.unet(latents, self._timestep, encoder_hidden_states=tokens).sample

    def tune(self, channels_last: bool = False, compile_decoder: bool = False) -> None:
        """Speed options that `bench musetalk` measures on a GPU before the engine takes them up
        (docs/performance.md): the VAE decode is the largest stage there (3.2 of 5.0 ms a frame at
        batch 32 on an H200), and its GroupNorm + SiLU + 3x3 convolutions at 256x256 run below
        the card's tensor throughput.

        channels_last: the UNet and the VAE in NHWC, the layout cuDNN's tensor-core convolutions
        work in (in NCHW each convolution transposes in and out); inputs follow.
        compile_decoder: torch.compile the VAE decoder (fusing each GroupNorm with its SiLU);
        each batch shape compiles on its first use, seconds to a minute, so only a warm-up that
        runs every shape makes this safe on air."""
        torch = self.torch
        if channels_last:
            self.codec.memory_format = torch.channels_last
            self.unet.to(memory_format=torch.channels_last)
            self.codec.vae.to(memory_format=torch.channels_last)
        if compile_decoder:
            self.codec.vae.decoder = torch.compile(self.codec.vae.decoder, dynamic=False)

    def synchronize(self) -> None:
        """Wait for queued GPU work (only timing needs this; results are copied to the host anyway)."""
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()


def load_vae(models_dir: Path, device: str, dtype: str = "auto") -> VaeCodec:
    """The VAE alone (all that avatar preparation needs), after checking its files."""
    models_dir = Path(models_dir)
    require_weights(models_dir, ("vae",))
    device = resolve_device(device)
    resolve_dtype(device, dtype)  # a bad name fails before the weights are read
    return _vae(models_dir, device, dtype)


def load_model(models_dir: Path, device: str, dtype: str = "auto") -> MuseTalkModel:
    """All three networks from the v1.5 layout under models_dir (checked first: EngineError)."""
    models_dir = Path(models_dir)
    require_weights(models_dir)
    torch = _deps.require("torch")
    diffusers = _deps.require("diffusers")
    transformers = _deps.require("transformers")
    device = resolve_device(device)
    resolve_dtype(device, dtype)  # a bad name fails before the weights are read
    codec = _vae(models_dir, device, dtype)
    whisper_dir = (models_dir / WHISPER_CONFIG.path).parent
    try:
        with torch.device("meta"):
            unet = diffusers.UNet2DConditionModel.from_config(read_json(UNET_CONFIG, models_dir))
        unet.load_state_dict(load_state_dict(models_dir / UNET_WEIGHTS.path), strict=True, assign=True)
        if any(t.is_meta for t in [*unet.parameters(), *unet.buffers()]):
            raise EngineError(
                "the UNet checkpoint left tensors unset (a buffer it does not carry)", setting="TALKING_FACE_MODEL_PATH"
            )
        encoder = transformers.WhisperModel.from_pretrained(str(whisper_dir)).encoder
        extractor = transformers.WhisperFeatureExtractor.from_pretrained(str(whisper_dir))
    except EngineError:
        raise
    except Exception as e:
        raise EngineError(
            f"cannot load MuseTalk weights from {models_dir}: {_first_line(e)}", setting="TALKING_FACE_MODEL_PATH"
        ) from e
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # fixed shapes per batch size: let cuDNN pick kernels
    log.info("MuseTalk v1.5 loaded from %s on %s (%s)", models_dir, device, codec.dtype)
    return MuseTalkModel(unet, codec, encoder, extractor)


def _vae(models_dir: Path, device: str, dtype: str) -> VaeCodec:
    diffusers = _deps.require("diffusers")
    _deps.quiet_libraries()
    vae_dir = (models_dir / VAE_CONFIG.path).parent
    try:
        # accelerate is not a dependency; say so up front instead of letting diffusers warn
        vae = diffusers.AutoencoderKL.from_pretrained(str(vae_dir), low_cpu_mem_usage=False)
    except Exception as e:
        raise EngineError(f"cannot load the VAE from {vae_dir}: {_first_line(e)}", setting="TALKING_FACE_MODEL_PATH") from e
    return VaeCodec(vae, device, dtype)


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def build_random(device: str, tiny: bool = False, dtype: str = "auto") -> MuseTalkModel:
    """The real architectures (or small stand-ins) with random weights: same cost, no files."""
    torch = _deps.require("torch")
    diffusers = _deps.require("diffusers")
    transformers = _deps.require("transformers")
    device = resolve_device(device)
    resolve_dtype(device, dtype)  # a bad name fails before the networks are built
    unet_cfg, vae_cfg, whisper_cfg = dict(configs.UNET), dict(configs.VAE), dict(configs.WHISPER)
    pre_cfg = dict(configs.WHISPER_PREPROCESSOR)
    if tiny:
        unet_cfg.update(block_out_channels=[32, 64, 64, 64], layers_per_block=1)
        vae_cfg.update(block_out_channels=[8, 8, 16, 16], layers_per_block=1, norm_num_groups=4)
        whisper_cfg.update(encoder_ffn_dim=64, decoder_layers=1, decoder_ffn_dim=64, vocab_size=64,
                           max_source_positions=150, max_target_positions=16)
        pre_cfg.update(chunk_length=3)
    with torch.device(device):  # random init straight on the device: fast on a GPU
        unet = diffusers.UNet2DConditionModel.from_config(unet_cfg)
        vae = diffusers.AutoencoderKL.from_config(vae_cfg)
        whisper_cfg = {k: v for k, v in whisper_cfg.items() if k != "model_type"}
        whisper = importlib.import_module("transformers.models.whisper.modeling_whisper")
        encoder = whisper.WhisperEncoder(transformers.WhisperConfig(**whisper_cfg))  # no decoder needed
    extractor = transformers.WhisperFeatureExtractor(**pre_cfg)
    return MuseTalkModel(unet, VaeCodec(vae, device, dtype), encoder, extractor)
