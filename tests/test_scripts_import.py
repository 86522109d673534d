"""The Python scripts under scripts/ (benchmarks, pictures, the demo) import against today's
code: a helper renamed in src/ must not leave a documented script failing at its first line
(scripts/bench_life.py did, and docs/idle.md quotes its figures)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[path.name for path in SCRIPTS])
def test_the_script_imports(script: Path) -> None:
    spec = importlib.util.spec_from_file_location(f"poc_script_{script.stem}", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # each runs its work only under `if __name__ == "__main__"`
    assert callable(getattr(module, "main", None)), f"{script.name} has no main()"
