import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

# Some machines set PYTHONDONTWRITEBYTECODE: then every run compiles poc and re-writes the
# asserts of ~200 test modules from source, in each xdist worker (3 s of the fast lane's
# collection on a 2-vCPU machine). The caches live in ignored __pycache__ folders.
sys.dont_write_bytecode = False
sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import lanes  # noqa: E402
from support.processes import RtmpServer, ServiceProcess, free_port  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    """Choose the fast lane or the full suite (support/lanes.py) before test modules are imported:
    property tests read their example counts at import time."""
    try:
        lanes.use(lanes.choose(config.getoption("markexpr") or ""))
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None


def pytest_report_header(config: pytest.Config) -> str:
    return f"poc test profile: {lanes.current()} (POC_TEST_PROFILE=fast|full)"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


def _rabbitmq_up() -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", 5672)) == 0


@pytest.fixture(scope="session")
def rabbitmq() -> str:
    """The machine's RabbitMQ (scripts/test.sh starts it); started here as a last resort."""
    if not _rabbitmq_up():
        subprocess.run(["rabbitmq-server", "-detached"], capture_output=True)
        deadline = time.monotonic() + 60
        while not _rabbitmq_up():
            if time.monotonic() > deadline:
                pytest.fail("RabbitMQ is not running on 127.0.0.1:5672 and could not be started")
            time.sleep(0.5)
    return "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture(scope="session")
def rtmp_server():
    """The project's nginx for the whole session. Its folder must be readable by the workers
    (nginx started as root runs them as `nobody`) or HLS requests fail; pytest's tmp folders
    are private (0700), so it gets a folder of its own."""
    run_dir = Path(tempfile.mkdtemp(prefix="poc-nginx-"))
    run_dir.chmod(0o755)
    server = RtmpServer(run_dir)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def service_env(rtmp_server: RtmpServer, rabbitmq: str) -> dict[str, str]:
    """Settings for one service under test: its own stream key, queue and HTTP port."""
    # the stream key is a secret the service masks in its logs: keep it out of other names
    key, queue = uuid.uuid4().hex[:12], uuid.uuid4().hex[:10]
    return {
        "RTMP_URL": f"{rtmp_server.base_url}/k{key}",
        "RABBITMQ_QUEUE": f"poc_test_{queue}",
        "RABBITMQ_RECONNECT_SECONDS": "0.5",
        "HTTP_PORT": str(free_port()),
        "LOG_LEVEL": "info",
    }


@pytest.fixture
def start_service(tmp_path: Path, service_env: dict[str, str]):
    """Start `python -m poc run` with the test's settings (plus overrides); killed afterwards."""
    started: list[ServiceProcess] = []

    def start(**overrides: str) -> ServiceProcess:
        env = {**service_env, **overrides}
        service = ServiceProcess(env, tmp_path / f"service{len(started)}.log").start()
        started.append(service)
        return service

    yield start
    for service in started:
        service.kill()
