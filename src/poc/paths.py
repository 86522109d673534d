"""Where the project's own files live (the repository root for an editable install)."""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent.parent
ASSETS_DIR = PROJECT_ROOT / "assets"
DEFAULT_AVATAR = ASSETS_DIR / "avatar.png"
DEFAULT_MODELS_DIR = PROJECT_ROOT / "models"
RUN_DIR = PROJECT_ROOT / "run"
