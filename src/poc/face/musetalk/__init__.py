"""MuseTalk v1.5 lip sync (GPU): a clean-room engine over diffusers and transformers.

torch, diffusers and transformers are the optional `poc[musetalk]` extra, so nothing here imports
them at module level; a missing extra is an EngineError when the engine starts.

Modules: timing (audio steps per frame), resample (stream rate -> 16 kHz), weights (file layout,
checks, download), configs (the real architectures), model (the networks), geometry (crop box,
blend mask), prepare (per-avatar cache), render (one batch), shared (one loaded model per process),
batcher and deadlines (rows of all stations batched earliest deadline first), engine (the
FaceEngine), commands (CLI glue).
"""

from poc.face.musetalk.engine import MuseTalkEngine, MuseTalkUtterance
from poc.face.musetalk.timing import audio_steps_for_frame
from poc.face.musetalk.weights import check_weights, fetch_weights

__all__ = ["MuseTalkEngine", "MuseTalkUtterance", "audio_steps_for_frame", "check_weights", "fetch_weights"]
