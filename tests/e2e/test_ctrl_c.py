"""An operator who presses Ctrl-C again and again while poc stops: the second one cuts the
graceful stop short, as documented, and the rest must not matter. A Ctrl-C that landed in the
interpreter's own teardown, after every part had stopped, printed a traceback of Python's
internals ("Exception ignored ... KeyboardInterrupt") that read like a crash. Real process."""

from __future__ import annotations

import signal
import time

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("attempt", range(3))  # where the presses land varies from run to run
def test_ctrl_c_pressed_until_poc_exits_ends_it_without_a_traceback(start_service, attempt: int):
    service = start_service()
    service.wait_for_log(r"on air: streaming", timeout=60)
    service.wait_for_log(r"connected to RabbitMQ", timeout=30)
    mark = len(service.log_text())
    assert service.process is not None
    deadline = time.monotonic() + 20
    while service.process.poll() is None:
        assert time.monotonic() < deadline, "poc did not exit"
        service.signal(signal.SIGINT)
        time.sleep(0.005)
    said = service.log_text()[mark:]
    assert "Traceback" not in said and "Exception ignored" not in said, said[-3000:]
    assert service.process.returncode in (0, 130), service.process.returncode
