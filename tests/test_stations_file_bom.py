"""A stations file saved by an editor that starts UTF-8 with a byte-order mark (Windows' Notepad
did by default) loads as it reads on screen, instead of 'line 1: Invalid statement'."""

from __future__ import annotations

from pathlib import Path

from poc.config import load_settings
from poc.stations import load_stations

NO_ENV_FILE = Path("/nonexistent/poc.env")


def test_a_byte_order_mark_is_not_part_of_the_file(tmp_path: Path):
    path = tmp_path / "stations.toml"
    path.write_bytes(b'\xef\xbb\xbf[[station]]\nname = "lobby"\nqueue = "lobby_in"\n')
    (lobby,) = load_stations(path, load_settings({}, NO_ENV_FILE), {}, NO_ENV_FILE)
    assert (lobby.name, lobby.settings.rabbitmq_queue) == ("lobby", "lobby_in")
