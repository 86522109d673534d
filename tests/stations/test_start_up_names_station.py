"""The stations of the example file are named after their stream keys (`lobby` streams to
.../live/lobby). Masking those keys turned every start-up line into `[***] ...` and the one line
a failed start-up prints into "cannot start: station '***'": the operator could not tell which
station to fix. The real command, as an operator runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from support.processes import free_port


@pytest.mark.slow  # a real start-up: seconds of CPU
def test_a_station_that_cannot_start_is_named_though_its_name_is_its_stream_key(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "no-face.png"), np.full((360, 640, 3), 128, np.uint8))
    (tmp_path / "stations.toml").write_text(
        '[[station]]\nname = "lobby"\nrtmp_url = "rtmp://127.0.0.1:1/live/lobby"\n'
        'queue = "poc_test_lobby_never_used"\navatar = "no-face.png"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "poc", "run", "--stations", "stations.toml", "--http-port", str(free_port())],
        cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "POC_ENV_FILE": "/nonexistent"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("poc: cannot start: station 'lobby': STATIC_VIDEO_PATH: warp engine: no face found"), last
    assert "[***]" not in done.stderr and "[lobby] " in done.stderr
