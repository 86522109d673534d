"""A stations file whose avatar cannot be decoded is refused as a whole, like any other bad value.

On SIGHUP the host applies what load_stations returns: a changed station is stopped, then built
again. An avatar that exists but does not decode (an upload still being copied, a text file
named .mp4) used to pass the file check, so the station went off air at the rebuild and stayed
off. Refused here, the reload is one line and what is on air is untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from poc.config import ConfigError, load_settings
from poc.paths import PROJECT_ROOT
from poc.stations import load_stations

NO_ENV_FILE = Path("/nonexistent/poc.env")
AVATAR = PROJECT_ROOT / "assets" / "avatar.png"


def stations_file(folder: Path, shop_keys: str) -> Path:
    path = folder / "stations.toml"
    path.write_text(
        '[[station]]\nname = "lobby"\nqueue = "lobby_in"\nrtmp_url = "rtmp://127.0.0.1/live/lobby"\n\n'
        f'[[station]]\nname = "shop"\nqueue = "shop_in"\nrtmp_url = "rtmp://127.0.0.1/live/shop"\n{shop_keys}\n',
        encoding="utf-8",
    )
    return path


def reload_error(path: Path) -> str:
    with pytest.raises(ConfigError) as raised:
        load_stations(path, load_settings({}, NO_ENV_FILE), {}, NO_ENV_FILE)
    line = raised.value.line()
    assert "\n" not in line
    return line


def test_a_half_copied_avatar_image_is_refused_naming_the_station_and_key(tmp_path: Path):
    half = tmp_path / "new_face.png"
    data = AVATAR.read_bytes()
    half.write_bytes(data[: len(data) // 2])
    path = stations_file(tmp_path, 'avatar = "new_face.png"')
    assert reload_error(path) == f"STATIONS_FILE {path}: station 'shop': avatar: cannot read avatar image: {half}"


def test_a_talking_avatar_that_is_not_a_video_is_refused(tmp_path: Path):
    (tmp_path / "talk.mp4").write_text("not a video\n")
    path = stations_file(tmp_path, f'avatar = "{AVATAR}"\ntalking_avatar = "talk.mp4"')
    assert reload_error(path).startswith(f"STATIONS_FILE {path}: station 'shop': talking_avatar: cannot read any frame")


def test_good_avatars_still_load(tmp_path: Path):
    (tmp_path / "face.png").write_bytes(AVATAR.read_bytes())
    path = stations_file(tmp_path, 'avatar = "face.png"')
    lobby, shop = load_stations(path, load_settings({}, NO_ENV_FILE), {}, NO_ENV_FILE)
    assert shop.settings.idle_avatar_path == tmp_path / "face.png"
