"""The MuseTalk v1.5 weight files: where they go, where they come from, whether they are sound.

Layout under the models directory (the upstream `models/` layout for v1.5):

    musetalkV15/musetalk.json, musetalkV15/unet.pth         <- TMElyralab/MuseTalk
    sd-vae/config.json, sd-vae/diffusion_pytorch_model.{safetensors,bin}
                                                             <- stabilityai/sd-vae-ft-mse
    whisper/config.json, whisper/{model.safetensors,pytorch_model.bin},
    whisper/preprocessor_config.json                         <- openai/whisper-tiny
    face-parse-bisent/79999_iter.pth (optional)              <- vivym/face-parsing-bisenet, a third-
                        party copy, not verified to be identical, of the face-parsing.PyTorch
                        release upstream fetches from Google Drive

Without the optional face-parsing weights the blend mask is drawn from the landmarks; with them
it is upstream's parsed jaw mask (parsing.py). Upstream also fetches `resnet18-5c106cde.pth` for
the parser, but only to initialise the backbone before 79999_iter.pth overwrites every tensor, so
it is not needed here.

A check costs well under a second even for the 3.4 GB UNet: configs are parsed, checkpoints are
opened lazily (safetensors headers, torch zip files memory-mapped) and their tensor names and
shapes compared with a model built from the config on torch's `meta` device (no memory, no
init). So "corrupt" covers unreadable JSON, truncated or unloadable files, a checkpoint that
does not fit its config, and a file a download manager preallocated and left zero-filled (its last
64 KiB sampled, see `_zero_filled`), each reported on one line naming the file and how to replace it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import socket
from pathlib import Path
from typing import Any, BinaryIO, Iterable
from urllib.parse import urlparse

import attrs

from poc.face.base import EngineError
from poc.face.musetalk import _deps
from poc.face.musetalk.timing import LAYERS

HUB = "https://huggingface.co"
PARTS = ("unet", "vae", "whisper")  # required
OPTIONAL = ("parser",)
ALL_PARTS = PARTS + OPTIONAL
AUDIO_WIDTH = 384  # whisper-tiny width = the UNet's cross-attention width


@attrs.frozen
class WeightFile:
    """One file of the layout: `path` under models_dir, `repo_path` inside the HF repo.
    `alternatives` are other acceptable names in the same folder (same repo folder too)."""

    part: str
    path: str
    repo: str
    repo_path: str
    alternatives: tuple[str, ...] = ()

    def candidates(self) -> list[tuple[str, str]]:
        """(path under models_dir, path in the repo), first choice first."""
        out = [(self.path, self.repo_path)]
        repo_dir = self.repo_path.rpartition("/")[0]
        for alt in self.alternatives:
            name = alt.rpartition("/")[2]
            out.append((alt, f"{repo_dir}/{name}" if repo_dir else name))
        return out

    def find(self, models_dir: Path) -> Path | None:
        for rel, _ in self.candidates():
            if (models_dir / rel).is_file():
                return models_dir / rel
        return None

    def where(self, models_dir: Path) -> str:
        names = " or ".join(rel.rpartition("/")[2] for rel, _ in self.candidates())
        return f"{names} from {HUB}/{self.repo} (repo path {self.repo_path}) into {models_dir / self.path.rpartition('/')[0]}/"


UNET_CONFIG = WeightFile("unet", "musetalkV15/musetalk.json", "TMElyralab/MuseTalk", "musetalkV15/musetalk.json")
UNET_WEIGHTS = WeightFile("unet", "musetalkV15/unet.pth", "TMElyralab/MuseTalk", "musetalkV15/unet.pth")
VAE_CONFIG = WeightFile("vae", "sd-vae/config.json", "stabilityai/sd-vae-ft-mse", "config.json")
VAE_WEIGHTS = WeightFile(
    "vae",
    "sd-vae/diffusion_pytorch_model.safetensors",
    "stabilityai/sd-vae-ft-mse",
    "diffusion_pytorch_model.safetensors",
    alternatives=("sd-vae/diffusion_pytorch_model.bin",),
)
WHISPER_CONFIG = WeightFile("whisper", "whisper/config.json", "openai/whisper-tiny", "config.json")
WHISPER_WEIGHTS = WeightFile(
    "whisper",
    "whisper/model.safetensors",
    "openai/whisper-tiny",
    "model.safetensors",
    alternatives=("whisper/pytorch_model.bin",),
)
WHISPER_PREPROCESSOR = WeightFile(
    "whisper", "whisper/preprocessor_config.json", "openai/whisper-tiny", "preprocessor_config.json"
)
FILES = (UNET_CONFIG, UNET_WEIGHTS, VAE_CONFIG, VAE_WEIGHTS, WHISPER_CONFIG, WHISPER_WEIGHTS, WHISPER_PREPROCESSOR)
PARSER_WEIGHTS = WeightFile("parser", "face-parse-bisent/79999_iter.pth", "vivym/face-parsing-bisenet", "79999_iter.pth")
PARSER_ORIGIN = "Google Drive file id 154JgKpzCPW82qINcVieuPH3fZ2e0P812 (face-parsing.PyTorch's release)"


@attrs.frozen
class Problem:
    """What is wrong with one file (file None: a problem with the check itself)."""

    file: WeightFile | None
    message: str


def check_weights(models_dir: Path, parts: Iterable[str] = ALL_PARTS) -> list[str]:
    """Problems with the weights under models_dir, one line each; empty means ready to load.
    A missing optional file is not a problem (see `optional_notes`); a damaged one is."""
    return [p.message for p in find_problems(models_dir, parts)]


def optional_notes(models_dir: Path) -> list[str]:
    """One line per optional file that is absent, saying what is used instead."""
    if PARSER_WEIGHTS.find(Path(models_dir)) is not None:
        return []
    return [
        f"optional: {Path(models_dir) / PARSER_WEIGHTS.path} not found, so the blend mask is drawn from the "
        f"landmarks; for upstream's parsed jaw mask download {PARSER_WEIGHTS.where(Path(models_dir))} "
        f"(said to be a copy of {PARSER_ORIGIN}, not verified)"
    ]


def require_weights(models_dir: Path, parts: Iterable[str] = ALL_PARTS) -> None:
    """Raise a one-line EngineError naming every problem (a start-up check)."""
    problems = check_weights(models_dir, parts)
    if problems:
        more = "; ".join(problems)
        raise EngineError(
            f"MuseTalk weights are not usable ({len(problems)} problem(s)): {more}", setting="TALKING_FACE_MODEL_PATH"
        )


def find_problems(models_dir: Path, parts: Iterable[str] = ALL_PARTS) -> list[Problem]:
    models_dir = Path(models_dir)
    problems: list[Problem] = []
    deep = _deps.available()
    for part in parts:
        if part not in ALL_PARTS:
            raise ValueError(f"unknown weight part {part!r} (expected one of {ALL_PARTS})")
        if part == "parser":
            reason = parser_problem(models_dir) if deep else ""
            problems += [Problem(PARSER_WEIGHTS, reason)] if reason else []
        else:
            problems += _check_part(part, models_dir, deep)
    if not deep:
        problems.append(Problem(None, f"cannot verify the checkpoints' contents: {_deps.EXTRA_HINT}"))
    return problems


def parser_problem(models_dir: Path) -> str:
    """Why the face-parsing checkpoint present under models_dir cannot be loaded ('' when it can,
    or when it is absent). The step counters of batch norm are not weights; very old checkpoints
    lack them, so they are not required."""
    path = PARSER_WEIGHTS.find(models_dir)
    if path is None:
        return ""
    zeros = _zero_filled(path)
    if zeros:
        return _corrupt(PARSER_WEIGHTS, path, models_dir, zeros)
    try:
        found = tensor_shapes(path)
    except Exception as e:  # any reader failure means the file cannot be loaded
        reason = _unreadable(path, f"cannot read it as a torch checkpoint ({_one_line(e)}), truncated or damaged")
        return _corrupt(PARSER_WEIGHTS, path, models_dir, reason)
    torch = _deps.require("torch")
    from poc.face.musetalk.bisenet import FaceParsingNet

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in FaceParsingNet().state_dict().items() if not k.endswith("num_batches_tracked")}
    found = {k: v for k, v in found.items() if not k.endswith("num_batches_tracked")}
    reason = _shape_report(expected, found, check_unexpected=True)
    return _corrupt(PARSER_WEIGHTS, path, models_dir, f"does not match the BiSeNet face-parsing network: {reason}") if reason else ""


def read_json(file: WeightFile, models_dir: Path) -> dict[str, Any]:
    """A config file as a dict, or EngineError naming the file."""
    path = models_dir / file.path
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EngineError(
            _corrupt(file, path, models_dir, _unreadable(path, f"unreadable JSON ({_one_line(e)})")),
            setting="TALKING_FACE_MODEL_PATH",
        ) from e
    if not isinstance(data, dict):
        raise EngineError(_corrupt(file, path, models_dir, "not a JSON object"), setting="TALKING_FACE_MODEL_PATH")
    return data


def _check_part(part: str, models_dir: Path, deep: bool) -> list[Problem]:
    files = [f for f in FILES if f.part == part]
    problems = [Problem(f, _missing(f, models_dir)) for f in files if f.find(models_dir) is None]
    configs: dict[str, dict[str, Any]] = {}
    for f in files:
        if f.path.endswith(".json") and f.find(models_dir) is not None:
            try:
                configs[f.path] = read_json(f, models_dir)
            except EngineError as e:
                problems.append(Problem(f, str(e)))
    config_file = {"unet": UNET_CONFIG, "vae": VAE_CONFIG, "whisper": WHISPER_CONFIG}[part]
    weights_file = {"unet": UNET_WEIGHTS, "vae": VAE_WEIGHTS, "whisper": WHISPER_WEIGHTS}[part]
    config = configs.get(config_file.path)
    if config is None:
        return problems
    bad, wrong = _config_mismatch(part, config, configs.get(WHISPER_PREPROCESSOR.path))
    if wrong:
        problems.append(Problem(bad, _corrupt(bad, models_dir / bad.path, models_dir, wrong)))
        return problems
    weights = weights_file.find(models_dir)
    if weights is not None and deep:
        reason = _state_dict_mismatch(part, config, models_dir, weights)
        if reason:
            problems.append(Problem(weights_file, _corrupt(weights_file, weights, models_dir, reason)))
    return problems


def _config_mismatch(
    part: str, config: dict[str, Any], preprocessor: dict[str, Any] | None
) -> tuple[WeightFile, str]:
    """Which config cannot belong to MuseTalk v1.5, and why ('' when both can)."""
    def expect(key: str, want: Any) -> str:
        got = config.get(key)
        return "" if got == want else f"{key} is {got!r}, MuseTalk needs {want!r}"

    if part == "unet":
        return UNET_CONFIG, expect("in_channels", 8) or expect("out_channels", 4) or expect("cross_attention_dim", AUDIO_WIDTH)
    if part == "vae":
        return VAE_CONFIG, expect("in_channels", 3) or expect("latent_channels", 4)
    reason = expect("d_model", AUDIO_WIDTH) or expect("encoder_layers", LAYERS - 1)
    if reason or preprocessor is None:
        return WHISPER_CONFIG, reason
    need = 2 * int(config.get("max_source_positions", 1500))  # two mel frames per encoder step
    rate, hop = preprocessor.get("sampling_rate", 16000), preprocessor.get("hop_length", 160)
    frames = preprocessor.get("nb_max_frames") or preprocessor.get("chunk_length", 30) * rate // hop
    if rate != 16000:
        reason = f"sampling_rate is {rate!r}, MuseTalk needs 16000"
    elif preprocessor.get("feature_size", 80) != config.get("num_mel_bins", 80):
        reason = "feature_size does not match the encoder's num_mel_bins"
    elif frames != need:
        reason = f"it makes {frames} mel frames per window, the encoder needs {need}"
    return WHISPER_PREPROCESSOR, reason


def _state_dict_mismatch(part: str, config: dict[str, Any], models_dir: Path, weights: Path) -> str:
    """Compare the checkpoint's tensor names and shapes with the config's model ('' if fine).
    A file whose end is zeros is said to be one first: its header may read well enough."""
    zeros = _zero_filled(weights)
    if zeros:
        return zeros
    try:
        found = tensor_shapes(weights)
    except Exception as e:  # any reader failure means the file cannot be loaded
        kind = "safetensors" if weights.suffix == ".safetensors" else "torch"
        return _unreadable(weights, f"cannot read it as a {kind} checkpoint ({_one_line(e)}), truncated or damaged")
    expected = _expected_shapes(part, config, models_dir)
    if part == "vae":
        found = {_modern_attention_name(k): v for k, v in found.items()}
    elif part == "whisper":
        found = {k.removeprefix("model."): v for k, v in found.items()}
        expected = {k: v for k, v in expected.items() if k.startswith("encoder.")}
    reason = _shape_report(expected, found, check_unexpected=part == "unet")
    config_name = {"unet": UNET_CONFIG, "vae": VAE_CONFIG, "whisper": WHISPER_CONFIG}[part].path
    return f"does not match {config_name}: {reason}" if reason else ""


def _shape_report(
    expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], check_unexpected: bool
) -> str:
    """'' when found has every expected tensor at its shape, else a short account of the worst."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected] if check_unexpected else []
    shapes = [k for k in expected if k in found and _squeeze(found[k]) != _squeeze(expected[k])]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing tensors (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} tensors of other shapes (e.g. {k}: file {list(found[k])}, expected {list(expected[k])})")
    return ", ".join(parts)


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a checkpoint's tensors without reading their data."""
    if path.suffix == ".safetensors":
        safe_open = _deps.require("safetensors").safe_open
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    state = load_state_dict(path)
    return {k: tuple(v.shape) for k, v in state.items()}


def load_state_dict(path: Path) -> dict[str, Any]:
    """A raw torch state dict, memory-mapped when the file format allows it (the 3.4 GB UNet
    then costs no copy on CPU), read fully otherwise (old non-zip checkpoints)."""
    torch = _deps.require("torch")
    try:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap can only be used" not in str(e):
                raise
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"not a plain checkpoint of tensors: safe loading refused it ({_refusal(e)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("not a state dict of tensors")
    return state


def _refusal(error: pickle.UnpicklingError) -> str:
    """What torch's weights-only loading stopped at, without its advice to load unsafely (a
    weight file that needs that is the wrong file)."""
    detail = str(error).partition("WeightsUnpickler error:")[2].strip()
    return detail.partition(". Please use")[0].splitlines()[0] if detail else _one_line(error)


def _expected_shapes(part: str, config: dict[str, Any], models_dir: Path) -> dict[str, tuple[int, ...]]:
    torch = _deps.require("torch")
    with torch.device("meta"):
        if part == "unet":
            model = _deps.require("diffusers").UNet2DConditionModel.from_config(config)
        elif part == "vae":
            model = _deps.require("diffusers").AutoencoderKL.from_config(config)
        else:
            transformers = _deps.require("transformers")
            cfg = transformers.WhisperConfig.from_json_file(str(models_dir / WHISPER_CONFIG.path))
            model = transformers.WhisperModel(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


_OLD_ATTENTION = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}


def _modern_attention_name(key: str) -> str:
    """Old diffusers VAE checkpoints (sd-vae-ft-mse is from 2022) name the mid-block attention
    query/key/value/proj_attn; diffusers renames them on load, so the check does too."""
    for old, new in _OLD_ATTENTION.items():
        if old in key:
            return key.replace(old, new)
    return key


def _squeeze(shape: tuple[int, ...]) -> tuple[int, ...]:
    while len(shape) > 2 and shape[-1] == 1:  # 1x1 conv vs linear for the same attention weight
        shape = shape[:-1]
    return shape


def _missing(file: WeightFile, models_dir: Path) -> str:
    return f"missing {models_dir / file.path}: download {file.where(models_dir)} (or run: python -m poc models fetch)"


def _corrupt(file: WeightFile, path: Path, models_dir: Path, reason: str) -> str:
    return f"corrupt {path}: {reason}; download it again: {file.where(models_dir)}"


GIT_LFS_POINTER = b"version https://git-lfs"  # how a Git LFS pointer file begins
WEB_PAGE = (b"<!doctype html", b"<html")  # how a saved web page begins


def _unreadable(path: Path, otherwise: str) -> str:
    """Why a file its reader failed on is not what it should be, said so that the fix follows:
    an empty file, a Git LFS pointer (a clone without git-lfs) and a saved web page (the hub's
    page of a file rather than the file) are named as such, since the reader's own words mislead
    (torch's suggest turning its safe loading off); anything else is `otherwise`."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(64).lstrip().lower()
    except OSError as e:
        return f"cannot read it ({_one_line(e)})"
    if size == 0:
        return "the file is empty (0 bytes)"
    zeros = _zero_filled(path)
    if zeros:
        return zeros
    if head.startswith(GIT_LFS_POINTER):
        return f"a Git LFS pointer ({size} bytes), not the file itself: the repository was cloned without git-lfs"
    if head.startswith(WEB_PAGE):
        return f"a web page ({size} bytes), not the file itself: download the file (the hub's 'resolve' link), not its page"
    return otherwise


ZERO_BLOCK = 64 << 10  # bytes per sampled block: 16 Ki fp32 or 32 Ki fp16 values
ZERO_SAMPLES = 8  # blocks sampled across the file, besides its last one


def _zero_filled(path: Path) -> str:
    """Why the file looks like a download left unfinished ('' when it does not, or cannot be read).

    Download managers preallocate a file at its full size and fill it in, so one stopped early has
    the right size, often a good header, and zeros from where it stopped to the end. A complete
    weight file never ends in ZERO_BLOCK zero bytes: a torch zip ends with its directory, a
    safetensors file with tensor data, and that many real fp16/fp32 values are never all exactly
    zero (zero-initialised biases and buffers are far smaller). So the last block decides; the
    spread samples only say from about where the zeros run. At most 9 blocks are read, whatever
    the file's size (the UNet is 3.4 GB)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            tail = max(0, size - ZERO_BLOCK)
            if size == 0 or not _zero_block(f, tail):
                return ""
            zero_from = tail
            starts = [k * size // ZERO_SAMPLES for k in range(ZERO_SAMPLES)]
            for start in reversed([s for s in starts if s < tail]):  # walk back while still zeros
                if not _zero_block(f, start):
                    break
                zero_from = start
    except OSError:
        return ""  # the reader will say what is wrong
    where = "all zeros where sampled" if zero_from == 0 else f"zeros from about {100 * zero_from // size}% of its {size} bytes on"
    return f"the file is {where}: it looks like an incomplete download (a file preallocated with zeros and never filled in)"


def _zero_block(f: BinaryIO, start: int) -> bool:
    f.seek(start)
    block = f.read(ZERO_BLOCK)
    return block == bytes(len(block))


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


# --- fetching ---------------------------------------------------------------------------------


def fetch_weights(models_dir: Path, endpoint: str | None = None, timeout: float = 10.0) -> list[str]:
    """Download whatever is missing or corrupt from the Hugging Face hub, then check again.

    Returns the problems left (empty: all good). When the hub cannot be reached it returns at
    once, one line per file still needed, instead of letting huggingface_hub retry for minutes.
    """
    models_dir = Path(models_dir)
    needed: list[WeightFile] = []
    for p in find_problems(models_dir):
        if p.file is not None and p.file not in needed:
            needed.append(p.file)
    if PARSER_WEIGHTS.find(models_dir) is None:  # optional, but a fetch gets everything upstream uses
        needed.append(PARSER_WEIGHTS)
    if not needed:
        return check_weights(models_dir)
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or HUB).rstrip("/")
    unreachable = _probe(endpoint, timeout)
    if unreachable:
        return [_not_fetched(f, models_dir, unreachable) for f in needed]
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(int(timeout)))
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(int(timeout)))
    try:
        hub = _deps.require("huggingface_hub")
    except EngineError as e:
        return [str(e)]
    failures: dict[WeightFile, str] = {}
    for f in needed:
        error = ""
        for rel, repo_path in f.candidates():
            local_dir = models_dir / rel[: len(rel) - len(repo_path)]
            try:
                hub.hf_hub_download(
                    f.repo, repo_path, local_dir=local_dir, endpoint=endpoint, etag_timeout=timeout,
                    force_download=(models_dir / rel).exists(),
                )
                error = ""
                break
            except Exception as e:  # network, 404, disk: try the alternative, then report
                error = _one_line(e)
        if error:
            failures[f] = _not_fetched(f, models_dir, error)
    left = [p.message for p in find_problems(models_dir) if p.file not in failures]
    return list(failures.values()) + left


def _not_fetched(file: WeightFile, models_dir: Path, reason: str) -> str:
    line = f"cannot download {file.repo_path} from {file.repo} ({reason}): fetch {file.where(models_dir)} by hand"
    if file.part in OPTIONAL:
        line += f" (optional, said to be a copy of {PARSER_ORIGIN}, not verified; without it the blend mask is drawn from the landmarks)"
    return line


def file_fingerprint(path: Path) -> str:
    """Identify a weight file cheaply (no multi-GB hashing at start-up): its size and first MiB."""
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


def file_sha256(path: Path) -> str:
    """The whole file's sha256 (hex), for an operator to compare with a published digest; read in
    1 MiB blocks, so only for files checked on request (the 53 MB parser, not the 3.4 GB UNet)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _probe(endpoint: str, timeout: float) -> str:
    """'' when a TCP connection to the hub opens, else why not (DNS, refused, timeout)."""
    url = urlparse(endpoint)
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=min(timeout, 5.0)):
            return ""
    except OSError as e:
        return f"{endpoint} unreachable: {_one_line(e)}"
