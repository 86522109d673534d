"""The face-only stations bench (`bench stations --engine musetalk --face-only`): stations talking
at once on one shared model batch together and get every talking frame back once, in order; its figures add
up; late frames are counted; and it runs where the service's own packages (pydantic, aio-pika)
and dlib are missing, as on the lent GPU machine. Nothing here asserts on timing: this CPU is
far too slow for 30 fps, so underruns are only shown to be counted."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from poc.bench import musetalk_stations, stations
from poc.bench.musetalk_stations import count_report, run_stations
from poc.face.avatar import Avatar
from poc.face.landmarks import detect_landmarks
from poc.face.musetalk.engine import MuseTalkEngine
from poc.face.musetalk.shared import SharedModels

from .conftest import SIZE
from .on_device import DEVICE

# Builds and runs MuseTalk's networks on the CPU: left out of the fast lane (README, Tests).
pytestmark = pytest.mark.slow

FPS = 10  # few frames per second of speech: the tiny model on this CPU renders about 8 a second
BATCH = 4
LINE_SECONDS = 1.0  # 10 frames a line: pieces of 4, 4 and 2, so partial submissions meet in batches


@pytest.fixture(scope="module")
def engines(tiny_models: Path, avatar_still: Avatar, tmp_path_factory: pytest.TempPathFactory):
    """Three warmed-up stations on one private model, as the bench builds them. Three, because
    two whose pieces each fill a batch settle into taking turns (each batch holds the rows of
    the one whose last batch is not running), which shares the model but rarely a batch."""
    models = SharedModels()
    cache = tmp_path_factory.mktemp("avatars")
    built = [
        MuseTalkEngine(avatar_still, tiny_models, DEVICE, BATCH, FPS, musetalk_stations.SAMPLE_RATE,
                       cache_dir=cache, station=name, models=models)  # fmt: skip
        for name in ("a", "b", "c")
    ]
    for engine in built:
        engine.warm_up()
    yield built
    for engine in built:
        engine.close()


@pytest.fixture(scope="module")
def talking_at_once(engines: list[MuseTalkEngine]):
    """All stations talking all the time, their lines starting together, for 1.5 s of lines."""
    seconds = 1.5
    tallies, before, after, _ = run_stations(engines, seconds, talking=1.0, line_seconds=LINE_SECONDS, stagger=False)
    return tallies, before, after, count_report(tallies, before, after, seconds, FPS, talking=1.0)


def test_stations_talking_at_once_share_batches_and_get_every_frame_once_in_order(talking_at_once) -> None:
    tallies, _, _, report = talking_at_once
    assert [t.error for t in tallies] == ["", "", ""]
    for tally in tallies:
        assert tally.lines >= 1 and len(tally.fed) == tally.lines * LINE_SECONDS * FPS
        assert tally.returned == tally.fed  # exactly once each, in the order fed
        assert len(set(tally.fed)) == len(tally.fed)  # lines never overlap on a station's clock
        assert tally.failures == 0
    assert report["mixed_batches"] > 0
    assert report["order_errors"] == 0 and report["engine_failures"] == 0 and report["errors"] == []


def test_the_report_adds_up(talking_at_once) -> None:
    tallies, before, after, report = talking_at_once
    fed = sum(len(t.fed) for t in tallies)
    assert report["stations"] == 3 and report["lines"] == sum(t.lines for t in tallies)
    assert report["frames_fed"] == report["frames_rendered"] == fed
    # every talking frame went through the model once, as a row of some batch
    rows = {name: after.rows.get(name, 0) - before.rows.get(name, 0) for name in ("a", "b", "c")}
    assert rows == {t.name: len(t.fed) for t in tallies}
    assert report["batches"] == after.batches - before.batches > 0
    assert report["mean_rows_per_batch"] == round(fed / report["batches"], 2) <= BATCH
    assert report["underruns"] == sum(t.underruns for t in tallies)
    assert report["worst_station_underruns"] == max(t.underruns for t in tallies)
    assert 0 < report["talking_share"] <= 1
    assert report["clean"] == (report["underruns"] == 0)


def test_a_station_whose_frames_are_due_at_once_counts_underruns(engines: list[MuseTalkEngine]) -> None:
    # lead 0: each line's first frame is shown on the current frame, before any render can end
    tallies, before, after, _ = run_stations(engines[:1], 0.5, talking=1.0, line_seconds=LINE_SECONDS, leads=[0])
    report = count_report(tallies, before, after, 0.5, FPS, talking=1.0)
    assert report["frames_rendered"] == LINE_SECONDS * FPS
    assert report["underruns"] > 0 and report["clean"] is False
    assert report["worst_late_ms"] > 0


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    stations.add_parser(parser.add_subparsers())
    return parser.parse_args(["stations", *argv])


@pytest.mark.parametrize(
    "argv, complaint",
    [
        (["--engine", "warp", "--face-only"], "--face-only needs --engine musetalk"),
        (["--engine", "musetalk", "--tiny"], "--tiny needs --face-only"),
        (["--engine", "musetalk", "--face-only", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["--engine", "musetalk", "--face-only", "--talking", "1.5"], "--talking between 0 and 1"),
    ],
)
def test_options_it_cannot_take_are_refused_before_anything_starts(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse(*argv)
    assert args.func(args) == 2
    assert complaint in capsys.readouterr().out


# Packages the GPU machine lacks: the service's settings and broker client, and dlib with its model.
BLOCKER = """
import importlib.abc, sys
ABSENT = {"pydantic", "pydantic_settings", "aio_pika", "aiormq", "dlib", "face_recognition_models"}
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ABSENT:
            raise ImportError(f"{name} is not installed here")
sys.meta_path.insert(0, Absent())
from poc.bench.musetalk_stations import main
sys.exit(main())
"""


def test_it_runs_without_the_service_packages_or_dlib_and_prints_its_figures(
    avatar_still: Avatar, tmp_path: Path
) -> None:
    landmarks = tmp_path / "landmarks.npy"
    np.save(landmarks, detect_landmarks(avatar_still.frames[0]))
    w, h = SIZE
    done = subprocess.run(
        [sys.executable, "-c", BLOCKER, "--tiny", "--device", DEVICE, "--resolution", f"{w}x{h}", "--fps", "5",
         "--batch-size", "2", "--counts", "1", "--seconds", "0.3", "--talking", "1.0", "--landmarks", str(landmarks)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    count = json.loads(lines[0])
    summary = json.loads("\n".join(lines[1:]))
    assert summary["results"] == [count]
    assert summary["engine"] == "musetalk" and summary["face_only"] is True and summary["weights"] == "tiny"
    described = {"device", "dtype", "batch_size", "resolution", "fps", "seconds", "talking", "largest_clean", "setup_s"}
    assert described <= summary.keys()
    assert summary["largest_clean"] == (1 if count["clean"] else 0)
    assert {
        "stations", "talking_share", "underruns", "worst_station_underruns", "frames_rendered", "engine_failures",
        "batches", "mean_rows_per_batch", "mixed_batches", "peak_gpu_mib", "rss_mib", "clean",
    } <= count.keys()  # fmt: skip
    line_frames = math.ceil(musetalk_stations.LINE_SECONDS * 5)  # the last frame padded with silence
    assert count["stations"] == 1 and count["lines"] == 1
    assert count["frames_rendered"] == count["frames_fed"] == line_frames and count["engine_failures"] == 0
    assert count["peak_gpu_mib"] is None and count["rss_mib"] > 0
