"""The stations file: each [[station]] gets the settings one stream would get from the same
environment, with its own keys on top; a bad file stops start-up with one line that names the
stations file, the station and the key."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poc.cli import main
from poc.config import ConfigError, Settings, env_names, load_settings
from poc.paths import PROJECT_ROOT
from poc.source.connection import control_queue_name, dead_letter_queue_name
from poc.stations import PROCESS_WIDE, Station, load_stations, station_queue
from support import amqp
from support.lanes import examples

NO_ENV_FILE = Path("/nonexistent/poc.env")
AVATAR = PROJECT_ROOT / "assets" / "avatar.png"


def base_settings(environ: dict[str, str], **overrides: str) -> Settings:
    return load_settings(environ, NO_ENV_FILE, overrides=overrides)


def load(path: Path, environ: dict[str, str] | None = None, **overrides: str) -> list[Station]:
    environ = environ or {}
    return load_stations(path, base_settings(environ, **overrides), environ, NO_ENV_FILE, overrides)


def write(folder: Path, text: str) -> Path:
    path = folder / "stations.toml"
    path.write_text(text, encoding="utf-8")
    return path


def station(name: str, queue: str | None = None, key: str | None = None, **extra: object) -> str:
    """A [[station]] table; `key` is the stream key on the local RTMP server."""
    lines = ["[[station]]", f"name = {json.dumps(name)}"]
    if queue is not None:
        lines.append(f"queue = {json.dumps(queue)}")
    if key is not None:
        lines.append(f'rtmp_url = "rtmp://127.0.0.1:1935/live/{key}"')
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n\n"


def error_of(path: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as raised:
        load(path, environ)
    message = str(raised.value)
    assert "\n" not in message
    assert raised.value.setting == "STATIONS_FILE"
    assert raised.value.line() == message  # printed as is: it already starts with STATIONS_FILE
    return message


def test_three_stations_inherit_the_environment_and_override_their_keys(tmp_path: Path):
    """A station sets its own values; what it leaves out is the environment's; `avatar` is its one
    face for idle and talking even when the environment names another talking face; a relative
    path is read from the stations file's folder, wherever poc was started."""
    folder = tmp_path / "conf"
    (folder / "faces").mkdir(parents=True)
    face = folder / "faces" / "shop.png"
    face.write_bytes(AVATAR.read_bytes())
    environ = {"RTMP_BITRATE": "3000k", "TTS_LANGUAGE": "en", "TALKING_FACE_AVATAR_IMAGE": str(AVATAR)}
    path = write(
        folder,
        station("lobby", "lobby_in", "lobby")
        + station("shop", "shop_in", "shop", avatar="faces/shop.png", fps=25, resolution="854x480", idle_blinks=False)
        + station("news", "news_in", "news", bitrate="1500k", idle_motion=0.5, tts_provider="espeak"),
    )

    lobby, shop, news = load(path, environ)

    assert [s.name for s in (lobby, shop, news)] == ["lobby", "shop", "news"]
    assert [s.settings.rabbitmq_queue for s in (lobby, shop, news)] == ["lobby_in", "shop_in", "news_in"]
    assert shop.settings.rtmp_url == "rtmp://127.0.0.1:1935/live/shop"
    assert (shop.settings.fps, shop.settings.resolution, shop.settings.idle_blinks) == (25, (854, 480), False)
    assert (lobby.settings.fps, lobby.settings.resolution, lobby.settings.idle_blinks) == (30, (1280, 720), True)
    assert [s.settings.bitrate for s in (lobby, shop, news)] == ["3000k", "3000k", "1500k"]
    assert all(s.settings.tts_language == "en" for s in (lobby, shop, news))
    assert (news.settings.tts_provider, news.settings.idle_motion) == ("espeak", 0.5)
    assert shop.settings.idle_avatar_path == shop.settings.talking_avatar_path == face
    assert lobby.settings.talking_avatar_path == AVATAR  # the environment's, untouched
    assert shop.keys["RTMP_FPS"] == "25" and shop.keys["STATIC_VIDEO_PATH"] == str(face)
    assert shop.keys["IDLE_BLINKS"] == "false" and news.keys["IDLE_MOTION"] == "0.5"
    assert "RTMP_FPS" not in lobby.keys


def test_process_wide_settings_are_the_process_own(tmp_path: Path):
    path = write(tmp_path, station("a", "qa", "a") + station("b", "qb", "b"))
    stations = load(path, {"HTTP_PORT": "8081"}, HTTP_PORT="9099")  # the CLI flag wins, for all
    assert {s.settings.http_port for s in stations} == {9099}


def test_the_shipped_example_loads_three_stations_on_the_local_server():
    stations = load(PROJECT_ROOT / "assets" / "stations.example.toml")
    assert len(stations) == 3
    assert len({s.settings.rabbitmq_queue for s in stations}) == 3
    assert all(s.settings.rtmp_url.startswith("rtmp://127.0.0.1:1935/live/") for s in stations)
    assert all(s.settings.idle_avatar_path.is_file() for s in stations)


def test_a_station_repr_shows_no_stream_key(tmp_path: Path):
    key = "k" + uuid.uuid4().hex
    (only,) = load(write(tmp_path, station("a", "qa", key)))
    assert only.keys["RTMP_URL"].endswith(key)
    assert key not in repr(only)


# (file body, the exact line after "STATIONS_FILE <path>: ")
EXACT_ERRORS = [
    (station("shop", "q", "k", fps=0), "station 'shop': fps: must be a whole number between 1 and 60 (got '0')"),
    (station("shop", "q", "k", colour="red"), "station 'shop': unknown key 'colour'"),
    (station("shop", "q", "k", rtmp_ulr="x"), "station 'shop': unknown key 'rtmp_ulr' (did you mean 'rtmp_url'?)"),
    (station("shop", "q", "k", RTMP_FPS=25), "station 'shop': unknown key 'RTMP_FPS' (did you mean 'rtmp_fps'?)"),
    (station("shop", "q", "k", http_port=8081), "station 'shop': 'http_port' is set once for the process, not per station"),
    (station("shop", "q", "k", fps=25, rtmp_fps=30), "station 'shop': 'fps' and 'rtmp_fps' both set RTMP_FPS"),
    (station("shop", "q", "k", fps=[25]), "station 'shop': fps: must be text, a number or true/false, not a list"),
    (station("shop", "q", "k", idle_blinks="often"), "station 'shop': idle_blinks: must be true or false (got 'often')"),
    (station("a", "q", "ka") + station("b", "q", "kb"), "stations 'a' and 'b' share the queue 'q'"),
    (station("a", None, "ka") + station("b", None, "kb"), "stations 'a' and 'b' share the queue 'talking_face_input'"),
    (station("a", "q", "k1") + station("a", "r", "k2"), "stations 1 and 2 are both named 'a'"),
    ('[[station]]\nqueue = "q"\n', "station 1: name: required (1-40 letters, digits, _ or -)"),
    (station("my shop", "q", "k"), "station 1: name: must be 1-40 letters, digits, _ or - (got 'my shop')"),
    (station("x" * 41, "q", "k"), f"station 1: name: must be 1-40 letters, digits, _ or - (got '{'x' * 41}')"),
    ("", "no stations (add a [[station]] table for each)"),
    ("# nothing yet\n", "no stations (add a [[station]] table for each)"),
    ('[station]\nname = "a"\n', "'station' must be [[station]] tables, one per station"),
    ('fps = 25\n' + station("a", "q", "k"), "unknown top-level key 'fps' (the file holds [[station]] tables)"),
    (station("a", "q", "k") + "[[station]]\nname = a\n", "line 7: Invalid value (column 8)"),
]


@pytest.mark.parametrize(("body", "expected"), EXACT_ERRORS)
def test_a_bad_file_is_one_line_naming_the_file_the_station_and_the_key(tmp_path: Path, body: str, expected: str):
    path = write(tmp_path, body)
    assert error_of(path) == f"STATIONS_FILE {path}: {expected}"


def test_a_missing_avatar_is_named_by_its_key_and_its_resolved_path(tmp_path: Path):
    path = write(tmp_path, station("shop", "q", "k", avatar="faces/gone.png"))
    assert error_of(path) == f"STATIONS_FILE {path}: station 'shop': avatar: file not found: {tmp_path / 'faces/gone.png'}"


def test_a_bad_environment_value_keeps_its_env_name(tmp_path: Path):
    path = write(tmp_path, station("shop", "q", "k", tts_provider="api"))
    assert error_of(path).startswith(f"STATIONS_FILE {path}: station 'shop': TTS_API_PROVIDER: required when TTS_PROVIDER=api")


@pytest.mark.parametrize(
    ("derived", "role"), [(control_queue_name, "control queue"), (dead_letter_queue_name, "dead-letter queue")]
)
def test_a_queue_that_is_another_stations_derived_queue_is_refused(tmp_path: Path, derived, role: str):
    """The broker would hand one station's controls (or dead letters) to the other."""
    for first, second in (("q", derived("q")), (derived("q"), "q")):
        path = write(tmp_path, station("a", first, "ka") + station("b", second, "kb"))
        owner = "a" if first == "q" else "b"
        expected = f"stations 'a' and 'b' share the queue '{derived('q')}' (the {role} of '{owner}')"
        assert error_of(path) == f"STATIONS_FILE {path}: {expected}"


def test_two_stations_on_one_stream_are_refused_without_showing_its_key(tmp_path: Path):
    key = "k" + uuid.uuid4().hex
    one = f'rtmp_url = "rtmp://Live.example.com/app/{key}"\n'
    same = f'rtmp_url = "rtmp://live.example.com:1935/app/{key}/"\n'
    path = write(tmp_path, station("a", "qa") + one + "\n" + station("b", "qb") + same)
    message = error_of(path)
    assert message == f"STATIONS_FILE {path}: stations 'a' and 'b' share the RTMP URL rtmp://live.example.com:1935/app/***"
    assert key not in message
    # both left to the environment's URL: the same stream too
    path = write(tmp_path, station("a", "qa") + station("b", "qb"))
    assert error_of(path).endswith("stations 'a' and 'b' share the RTMP URL rtmp://127.0.0.1:1935/live/***")


def test_a_secret_in_a_bad_value_is_not_echoed(tmp_path: Path):
    key = "k" + uuid.uuid4().hex
    path = write(tmp_path, station("a", "q") + f'rtmp_url = "http://127.0.0.1/live/{key}"\n')
    message = error_of(path)
    assert message == f"STATIONS_FILE {path}: station 'a': rtmp_url: must be an rtmp:// or rtmps:// URL with a host"
    assert key not in message


def test_an_unreadable_file_is_named(tmp_path: Path):
    missing = tmp_path / "none.toml"
    assert error_of(missing) == f"STATIONS_FILE {missing}: file not found"
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'[[station]]\nname = "caf\xe9"\n')
    assert error_of(latin).startswith(f"STATIONS_FILE {latin}: cannot read: 'utf-8' codec can't decode")
    assert error_of(tmp_path).startswith(f"STATIONS_FILE {tmp_path}: cannot read: ")  # a folder


def test_stations_file_setting_must_name_a_file(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"^STATIONS_FILE: file not found: "):
        base_settings({"STATIONS_FILE": str(tmp_path / "none.toml")})
    assert base_settings({"STATIONS_FILE": ""}).stations_file is None


def test_process_wide_names_are_settings():
    assert PROCESS_WIDE <= set(env_names())
    assert {"HTTP_PORT", "HTTP_HOST", "STUDIO_TOKEN", "LOG_LEVEL", "STATIONS_FILE"} <= PROCESS_WIDE


class TestStationQueue:
    def test_the_stations_queue_else_the_environments(self, tmp_path: Path):
        path = write(tmp_path, station("a", "qa", "a") + station("b", None, "b"))
        base = base_settings({"RABBITMQ_QUEUE": "from_env"})
        assert station_queue(path, "a", base) == "qa"
        assert station_queue(path, "b", base) == "from_env"

    def test_an_unknown_station_lists_the_known_ones(self, tmp_path: Path):
        path = write(tmp_path, station("a", "qa", "a") + station("b", "qb", "b"))
        with pytest.raises(ConfigError) as raised:
            station_queue(path, "c", base_settings({}))
        assert str(raised.value) == f"STATIONS_FILE {path}: no station 'c' (stations: a, b)"

    def test_a_bad_queue_names_its_key(self, tmp_path: Path):
        path = write(tmp_path, station("a", "amq.x", "a"))
        with pytest.raises(ConfigError) as raised:
            station_queue(path, "a", base_settings({}))
        assert str(raised.value) == f"STATIONS_FILE {path}: station 'a': queue: names starting with amq. are reserved by RabbitMQ"


# Any table of distinct names, queues and stream keys loads, and each station's keys come back
# as the settings it asked for.
names = st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True)
queues = st.from_regex(r"[a-z][a-z0-9_]{0,30}", fullmatch=True)  # no dot: none is another's .control
stream_keys = st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True)
tables = st.integers(1, 5).flatmap(
    lambda n: st.tuples(
        st.lists(names, min_size=n, max_size=n, unique=True),
        st.lists(queues, min_size=n, max_size=n, unique=True),
        st.lists(stream_keys, min_size=n, max_size=n, unique=True),
        st.lists(st.integers(1, 60), min_size=n, max_size=n),
        st.lists(st.booleans(), min_size=n, max_size=n),
    )
)


@given(tables)
@settings(max_examples=examples(60), deadline=None)
def test_any_table_of_distinct_stations_loads_and_round_trips_its_keys(table):
    import tempfile

    station_names, station_queues, keys, fps, blinks = table
    body = "".join(
        station(n, q, k, fps=f, idle_blinks=b) for n, q, k, f, b in zip(station_names, station_queues, keys, fps, blinks)
    )
    with tempfile.TemporaryDirectory() as folder:  # hypothesis runs many examples per tmp_path
        stations = load(write(Path(folder), body))
    assert [s.name for s in stations] == station_names
    for s, queue, key, f, b in zip(stations, station_queues, keys, fps, blinks):
        assert dict(s.keys) == {
            "RABBITMQ_QUEUE": queue,
            "RTMP_URL": f"rtmp://127.0.0.1:1935/live/{key}",
            "RTMP_FPS": str(f),
            "IDLE_BLINKS": "true" if b else "false",
        }
        assert (s.settings.rabbitmq_queue, s.settings.fps, s.settings.idle_blinks) == (queue, f, b)


# --- the command line ------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No poc setting from the machine's environment."""
    for name in env_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("POC_ENV_FILE", str(NO_ENV_FILE))


def stderr_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_run_with_a_bad_stations_file_exits_2_with_one_line(tmp_path: Path, clean_env, capsys):
    path = write(tmp_path, station("shop", "q", "k", colour="red"))
    assert main(["run", "--stations", str(path)]) == 2
    assert stderr_line(capsys) == f"poc: cannot start: STATIONS_FILE {path}: station 'shop': unknown key 'colour'"


def test_run_refuses_one_stream_flags_with_a_stations_file(tmp_path: Path, clean_env, monkeypatch, capsys):
    path = write(tmp_path, station("a", "qa", "a"))
    monkeypatch.setenv("STATIONS_FILE", str(path))
    assert main(["run", "--fps", "25"]) == 2
    line = stderr_line(capsys)
    assert line.startswith("poc: cannot start: STATIONS_FILE: --fps sets one stream's setting")


def test_the_stations_flag_wins_over_the_environment(tmp_path: Path, clean_env, monkeypatch, capsys):
    good = write(tmp_path, station("a", "qa", "a"))
    bad = tmp_path / "bad.toml"
    bad.write_text(station("a", "qa", "a", fps=99))
    monkeypatch.setenv("STATIONS_FILE", str(good))
    assert main(["run", "--stations", str(bad)]) == 2
    assert f"STATIONS_FILE {bad}: station 'a': fps:" in stderr_line(capsys)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--station", "a"], "poc send: --station needs a stations file (--stations FILE or STATIONS_FILE)"),
        (["--stations", "{file}", "--station", "a", "--queue", "q"], "poc send: give --queue or --station, not both"),
        (["--stations", "{file}", "--station", "c"], "poc send: STATIONS_FILE {file}: no station 'c' (stations: a, b)"),
    ],
)
def test_send_to_a_station_needs_a_known_station(tmp_path: Path, clean_env, capsys, args, expected):
    path = write(tmp_path, station("a", "qa", "a") + station("b", "qb", "b"))
    args = [arg.replace("{file}", str(path)) for arg in args]
    assert main(["send", *args, "hello"]) == 2
    assert stderr_line(capsys) == expected.replace("{file}", str(path))


@pytest.mark.integration
def test_send_to_a_station_publishes_to_its_queue(tmp_path: Path, clean_env, monkeypatch, rabbitmq, capsys):
    queue = f"poc_test_{uuid.uuid4().hex[:10]}"
    path = write(tmp_path, station("a", "other_" + queue, "a") + station("b", queue, "b"))
    monkeypatch.setenv("STATIONS_FILE", str(path))
    try:
        assert main(["send", "--station", "b", "hello station b"]) == 0
        assert capsys.readouterr().out.startswith(f"sent to {queue}: text ")
        (body, _headers), = amqp.drain(queue)
        assert json.loads(body)["data"] == "hello station b"
    finally:
        amqp.delete(queue, control_queue_name(queue), dead_letter_queue_name(queue))


def test_the_readme_shows_the_shipped_example():
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Stations (many streams in one process)\n", 1)[1].split("\n## ", 1)[0]
    shown = section.split("```toml\n", 1)[1].split("```", 1)[0]
    example = (PROJECT_ROOT / "assets" / "stations.example.toml").read_text(encoding="utf-8")
    assert shown.strip() in example and shown.count("[[station]]") == 3


@pytest.mark.integration
def test_send_publishes_where_the_services_files_are_missing(tmp_path: Path, clean_env, monkeypatch, rabbitmq, capsys):
    # A producer sharing the service's .env, on a machine without the avatar or the voice file.
    queue = f"poc_test_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("RABBITMQ_QUEUE", queue)
    monkeypatch.setenv("STATIC_VIDEO_PATH", str(tmp_path / "not-here" / "avatar.mp4"))
    monkeypatch.setenv("TALKING_FACE_AVATAR_VIDEO", str(tmp_path / "not-here" / "talking.mp4"))
    try:
        assert main(["send", "hello from the producer"]) == 0
        (body, _headers), = amqp.drain(queue)
        assert json.loads(body)["data"] == "hello from the producer"
    finally:
        amqp.delete(queue, control_queue_name(queue), dead_letter_queue_name(queue))


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--audio", "x.wav", "--voice", "joe"], "poc send: --voice applies to TEXT only (audio is played as it is)"),
        (["--control", "clear", "--voice", "joe"], "poc send: --voice applies to TEXT only (audio is played as it is)"),
        (["--control", "stop", "--interrupt"], "poc send: --interrupt applies to TEXT or --audio (a control message acts at once)"),
    ],
)
def test_send_refuses_flags_that_would_be_ignored(clean_env, capsys, args, expected):
    assert main(["send", *args]) == 2
    assert stderr_line(capsys) == expected


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ([""], {}, "poc send: not sent: 'data' is empty"),
        (["x" * 30], {"MAX_TEXT_CHARS": "20"}, "poc send: not sent: text is too long: 30 characters, over the 20-character limit"),
    ],
)
def test_send_refuses_what_the_service_would_dead_letter(clean_env, monkeypatch, capsys, args, env, expected):
    """It printed "sent" for an empty text, which the service then dead-lettered; now it says
    why at once, with the reason the dead-letter queue would give, and sends nothing."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["send", *args]) == 2
    assert stderr_line(capsys) == expected
