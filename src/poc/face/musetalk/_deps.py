"""The optional heavy dependencies, imported only when MuseTalk is actually used.

`import poc` must work on a machine without torch (the CPU engine needs none of it), so every
module of this package imports torch, diffusers and transformers through `require()`, inside the
functions that need them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from poc.face.base import EngineError

EXTRA_HINT = "TALKING_FACE_MODEL=musetalk needs the musetalk extra: pip install 'poc[musetalk]'"


def require(name: str) -> ModuleType:
    """Import `name` (torch, diffusers, transformers, safetensors, huggingface_hub) or say how
    to install it, as a start-up EngineError."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise EngineError(f"{EXTRA_HINT} ({e})", setting="TALKING_FACE_MODEL") from e


def available() -> bool:
    """True when the extra is installed (torch, diffusers and transformers all import)."""
    try:
        for name in ("torch", "diffusers", "transformers"):
            importlib.import_module(name)
    except ImportError:
        return False
    return True


def quiet_libraries() -> None:
    """Turn off the libraries' progress bars and info chatter (they would interleave with our
    logs); warnings and errors still come through their loggers."""
    transformers = require("transformers")
    diffusers = require("diffusers")
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
