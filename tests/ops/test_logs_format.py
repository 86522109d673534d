"""The service's log lines (ops/logs.py configure_logging): what an operator reading stderr gets.

What must hold: one line per event, stamped with the time, the level and the module; the level
setting filters as named; the broker client's chatter stays at warning and above even in debug;
configuring again replaces the handler instead of printing every line twice. (Masking secrets
is tested in test_logs.py.)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest

from poc.ops.logs import NOISY_LOGGERS, RedactSecrets, configure_logging

NOISY = ("aiormq", "aio_pika", "asyncio")
assert set(NOISY) <= set(NOISY_LOGGERS)
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) +(?P<name>[\w.]+): (?P<message>.*)$")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging owns the root logger; put back what the rest of the suite expects."""
    root = logging.getLogger()
    level = root.level
    noisy = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    yield
    for handler in list(root.handlers):
        if any(isinstance(f, RedactSecrets) for f in handler.filters):
            root.removeHandler(handler)
    root.setLevel(level)
    for name, old in noisy.items():
        logging.getLogger(name).setLevel(old)


def lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_each_event_is_one_line_with_time_level_and_module(capsys) -> None:
    configure_logging("info")
    logging.getLogger("poc.source.amqp").info("connected to RabbitMQ at %s", "127.0.0.1:5672")
    logging.getLogger("poc.media.writer").warning("RTMP output lost")
    first, second = lines(capsys)
    one, two = LINE.match(first), LINE.match(second)
    assert one and two, (first, second)
    assert one.group("level", "name", "message") == ("INFO", "poc.source.amqp", "connected to RabbitMQ at 127.0.0.1:5672")
    assert two.group("level", "name", "message") == ("WARNING", "poc.media.writer", "RTMP output lost")
    # levels are padded to one width, so the module names line up
    assert first.index("poc.source") == second.index("poc.media")


def test_a_traceback_follows_its_event_line_and_adds_no_other_event(capsys) -> None:
    configure_logging("info")
    try:
        raise RuntimeError("engine broke")
    except RuntimeError:
        logging.getLogger("poc.app").exception("message m-1 failed")
    out = lines(capsys)
    assert LINE.match(out[0]) and out[0].endswith("poc.app: message m-1 failed")
    assert out[1] == "Traceback (most recent call last):" and out[-1] == "RuntimeError: engine broke"
    assert sum(bool(LINE.match(line)) for line in out) == 1


@pytest.mark.parametrize(
    ("setting", "shown"),
    [
        ("debug", ["DEBUG", "INFO", "WARNING", "ERROR"]),
        ("info", ["INFO", "WARNING", "ERROR"]),
        ("WARNING", ["WARNING", "ERROR"]),
        ("error", ["ERROR"]),
    ],
)
def test_the_level_setting_shows_that_level_and_above(capsys, setting: str, shown: list[str]) -> None:
    configure_logging(setting)
    log = logging.getLogger("poc.pipeline")
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):
        log.log(level, "at %s", logging.getLevelName(level))
    assert [LINE.match(line).group("level") for line in lines(capsys)] == shown  # type: ignore[union-attr]


@pytest.mark.parametrize("setting", ["debug", "info"])
def test_the_broker_clients_chatter_stays_at_warning_and_above(capsys, setting: str) -> None:
    configure_logging(setting)
    for name in NOISY:
        logging.getLogger(name).info("reconnect attempt 7 failed")
        logging.getLogger(name).warning("connection lost")
    logging.getLogger("poc.source.amqp").info("ours")
    got = [LINE.match(line).group("level", "name", "message") for line in lines(capsys)]  # type: ignore[union-attr]
    assert got == [*(("WARNING", name, "connection lost") for name in NOISY), ("INFO", "poc.source.amqp", "ours")]


def test_the_broker_clients_follow_a_stricter_level(capsys) -> None:
    configure_logging("error")
    logging.getLogger("aio_pika").warning("connection lost")
    logging.getLogger("aio_pika").error("gave up")
    assert [LINE.match(line).group("message") for line in lines(capsys)] == ["gave up"]  # type: ignore[union-attr]


def test_configuring_again_replaces_the_handler(capsys) -> None:
    configure_logging("info")
    configure_logging("info", secrets=["s3cret-value"])
    logging.getLogger("poc.app").info("on air")
    [line] = lines(capsys)
    assert line.endswith("poc.app: on air")


def test_http_requests_to_vendors_are_not_logged_one_by_one(capsys) -> None:
    """A face API job is polled once a second for minutes, and its result is a pre-signed
    storage link: httpx logged each request at info, link and all. A real request here."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import httpx

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        configure_logging("info")
        signed = f"http://127.0.0.1:{server.server_port}/talks/tlk_1.mp4?X-Amz-Signature=abc123"
        assert httpx.get(signed).status_code == 200
        logging.getLogger("poc.face.hosted_video").info("d-id: video ready")
    finally:
        server.shutdown()
    said = lines(capsys)
    assert not any("X-Amz-Signature" in line for line in said), said
    assert len(said) == 1 and said[0].endswith("poc.face.hosted_video: d-id: video ready"), said  # ours only
