"""A path setting written as `~user/...` for a home folder poc cannot find (a typo'd user name,
or HOME unset for a service user without a passwd entry) is a bad setting like any other: one
line naming it, never a traceback; and on a SIGHUP reload a refused file, not a crashed host."""

from __future__ import annotations

from pathlib import Path

import pytest

from poc.cli import main
from poc.config import ConfigError, load_settings
from poc.paths import PROJECT_ROOT
from poc.stations import load_stations

NO_ENV_FILE = Path("/nonexistent/poc.env")
NO_SUCH_HOME = "~no_such_user_poc_test/face.png"


@pytest.mark.parametrize("name", ["STATIC_VIDEO_PATH", "TALKING_FACE_AVATAR_IMAGE", "TALKING_FACE_MODEL_PATH"])
def test_an_unknown_home_folder_names_the_setting(name: str):
    with pytest.raises(ConfigError) as raised:
        load_settings(environ={name: NO_SUCH_HOME}, env_file=NO_ENV_FILE)
    assert str(raised.value).startswith(f"{name}: ")
    assert "~no_such_user_poc_test" in str(raised.value)


def test_the_cli_says_it_in_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("POC_ENV_FILE", str(NO_ENV_FILE))
    monkeypatch.setenv("STATIC_VIDEO_PATH", NO_SUCH_HOME)
    assert main(["run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("poc: cannot start: STATIC_VIDEO_PATH: ") and "\n" not in err


def test_a_stations_file_edited_to_an_unknown_home_is_refused_with_one_line(tmp_path: Path):
    """What a SIGHUP reload calls: a ConfigError (the host logs it and keeps what is on air),
    not a RuntimeError that would end the host and every station with it."""
    path = tmp_path / "stations.toml"
    path.write_text(
        '[[station]]\nname = "lobby"\nqueue = "lobby_in"\n'
        f'avatar = "{PROJECT_ROOT / "assets" / "avatar.png"}"\n\n'
        f'[[station]]\nname = "shop"\nqueue = "shop_in"\nrtmp_url = "rtmp://127.0.0.1/live/shop"\n'
        f'avatar = "{NO_SUCH_HOME}"\n',
        encoding="utf-8",
    )
    base = load_settings({}, NO_ENV_FILE)
    with pytest.raises(ConfigError) as raised:
        load_stations(path, base, {}, NO_ENV_FILE)
    message = raised.value.line()
    assert message.startswith(f"STATIONS_FILE {path}: station 'shop': avatar: ")
    assert "\n" not in message
