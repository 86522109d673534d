"""`bench musetalk --tiny`: a table row per batch size with every stage timed (lives here because
the bench measures this package)."""

import argparse

import pytest

from poc.bench import musetalk as bench
from .on_device import DEVICE

# Builds and runs MuseTalk's networks on the CPU: left out of the fast lane (README, Tests).
pytestmark = pytest.mark.slow


def test_tiny_bench_prints_a_markdown_row_per_batch_size(capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser()
    bench.add_parser(parser.add_subparsers())
    args = parser.parse_args(["musetalk", "--tiny", "--device", DEVICE, "--batch-sizes", "1,3", "--repeats", "1", "--size", "640x360"])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    auto = "float16" if DEVICE.startswith("cuda") else "float32"
    assert any(line.startswith("device: ") and f"; dtype {auto} (auto);" in line for line in lines)
    header = next(line for line in lines if line.startswith("| batch"))
    assert all(stage in header for stage in ("features", "UNet", "VAE decode", "blend", "end-to-end fps"))
    assert header.split("|")[-2].strip() == "first frame ms"
    rows = [line.split("|")[1:-1] for line in lines if line.startswith("| 1 ") or line.startswith("| 3 ")]
    assert [r[0].strip() for r in rows] == ["1", "3"]
    for r in rows:
        stage_ms = [float(v) for v in r[1:5]]
        assert all(v >= 0 for v in stage_ms) and stage_ms[1] > 0  # the UNet always costs something
        assert float(r[6]) > 0
        assert float(r[-1]) > 0  # first frame: a Whisper pass and a batch always cost something


def test_the_speed_options_are_named_in_the_table_s_heading(capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser()
    bench.add_parser(parser.add_subparsers())
    args = parser.parse_args(["musetalk", "--tiny", "--device", DEVICE, "--batch-sizes", "1", "--repeats", "1",
                              "--size", "640x360", "--channels-last"])  # fmt: skip
    assert args.func(args) == 0
    heading = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("device: "))
    assert heading.endswith("; channels-last") and "compiled" not in heading


def test_batch_sizes_must_be_positive_integers() -> None:
    parser = argparse.ArgumentParser()
    bench.add_parser(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["musetalk", "--batch-sizes", "4,x"])
    with pytest.raises(SystemExit):
        parser.parse_args(["musetalk", "--batch-sizes", "0"])


def test_dtype_is_one_of_the_precisions_and_defaults_to_auto() -> None:
    parser = argparse.ArgumentParser()
    bench.add_parser(parser.add_subparsers())
    assert parser.parse_args(["musetalk"]).dtype == "auto"
    assert parser.parse_args(["musetalk", "--dtype", "bfloat16"]).dtype == "bfloat16"
    with pytest.raises(SystemExit):
        parser.parse_args(["musetalk", "--dtype", "int8"])
