"""`models check|fetch` and `avatar prepare` as a user runs them."""

import argparse
import hashlib
from pathlib import Path

import pytest

from poc.face.musetalk.commands import add_avatar_parser, add_models_parser
from poc.paths import DEFAULT_AVATAR

from .conftest import write_parser_weights
from .on_device import DEVICE

# Builds and runs MuseTalk's networks on the CPU: left out of the fast lane (README, Tests).
pytestmark = pytest.mark.slow


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="poc")
    sub = parser.add_subparsers(dest="command")
    add_models_parser(sub)
    add_avatar_parser(sub)
    return parser.parse_args(argv)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_models_check_passes_on_a_complete_layout(tiny_models_with_parser: Path, capsys: pytest.CaptureFixture) -> None:
    args = parse(["models", "check", "--models-dir", str(tiny_models_with_parser)])
    assert args.func(args) == 0
    complete, mask = capsys.readouterr().out.splitlines()
    assert "complete" in complete
    parser = tiny_models_with_parser / "face-parse-bisent/79999_iter.pth"
    assert mask.startswith(f"blend mask: upstream's parsed jaw, parser {parser} (sha256 {sha256(parser)};")
    # the file comes from a hub copy: the line says so, so the digest is worth comparing
    assert "vivym/face-parsing-bisenet" in mask and "not verified" in mask


def test_models_check_without_the_parser_passes_and_says_what_is_used_instead(
    tiny_models: Path, capsys: pytest.CaptureFixture
) -> None:
    args = parse(["models", "check", "--models-dir", str(tiny_models)])
    assert args.func(args) == 0
    complete, mask = capsys.readouterr().out.splitlines()
    assert "complete" in complete
    assert mask.startswith("blend mask: landmark polygon") and "79999_iter.pth is not there" in mask
    assert "sha256" not in mask


@pytest.mark.parametrize("command", ["check", "fetch"])
def test_models_check_and_fetch_print_the_digest_of_the_parser_file_they_find(
    models_copy: Path, command: str, capsys: pytest.CaptureFixture
) -> None:
    parser = write_parser_weights(models_copy)
    args = parse(["models", command, "--models-dir", str(models_copy)])
    # nothing is missing, so fetch downloads nothing (no network) and reports like check
    assert args.func(args) == 0
    (mask,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("blend mask: ")]
    assert f"parser {parser} (sha256 {sha256(parser)};" in mask


def test_a_damaged_parser_file_is_reported_with_its_digest_and_no_mask(models_copy: Path, capsys: pytest.CaptureFixture) -> None:
    parser = models_copy / "face-parse-bisent/79999_iter.pth"
    parser.parent.mkdir()
    parser.write_bytes(b"not a checkpoint")
    args = parse(["models", "check", "--models-dir", str(models_copy)])
    assert args.func(args) == 1
    out, err = capsys.readouterr()
    assert err.startswith(f"corrupt {parser}")
    (mask,) = out.splitlines()
    assert mask.startswith(f"blend mask: none, as the face-parsing file {parser} (sha256 {sha256(parser)})")


def test_models_check_lists_each_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = parse(["models", "check", "--models-dir", str(tmp_path)])
    assert args.func(args) == 1
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 7 and all(line.startswith("missing ") for line in lines)
    assert out.startswith("blend mask: landmark polygon")


def test_avatar_prepare_builds_then_loads_from_cache(tiny_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["avatar", "prepare", str(DEFAULT_AVATAR), "--size", "320x180", "--models-dir", str(tiny_models),
            "--device", DEVICE, "--cache-dir", str(tmp_path)]
    args = parse(argv)
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("prepared: ") and "landmark masks" in out
    assert args.func(args) == 0
    assert capsys.readouterr().out.startswith("loaded from cache: ")


def test_avatar_prepare_reports_a_bad_source_in_one_line(tiny_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = parse(["avatar", "prepare", str(tmp_path / "none.png"), "--models-dir", str(tiny_models)])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err


def test_a_malformed_size_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse(["avatar", "prepare", "x.png", "--size", "wide"])
    assert exit_.value.code == 2
    assert "1280x720" in capsys.readouterr().err


def test_avatar_prepare_uses_the_parser_when_its_weights_exist(
    tiny_models_with_parser: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = parse(["avatar", "prepare", str(DEFAULT_AVATAR), "--size", "320x180", "--models-dir",
                  str(tiny_models_with_parser), "--device", DEVICE, "--cache-dir", str(tmp_path)])
    assert args.func(args) == 0
    # random parser weights see no skin: every frame falls back to the landmarks, and it says so
    assert "landmark masks" in capsys.readouterr().out


def test_avatar_prepare_refuses_an_unknown_precision_in_one_line(tiny_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = parse(["avatar", "prepare", str(DEFAULT_AVATAR), "--models-dir", str(tiny_models), "--device", DEVICE,
                  "--dtype", "int8", "--cache-dir", str(tmp_path)])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "int8" in err
