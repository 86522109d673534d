"""Real processes for benchmarks and tests: the project's nginx RTMP server and the service."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from poc.paths import PROJECT_ROOT

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _process_table() -> dict[int, list[str]]:
    """pid -> the fields of /proc/PID/stat after the command name (state, ppid, ...)."""
    table: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                table[int(entry)] = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone while we looked
    return table


def descendants(root_pid: int, table: dict[int, list[str]] | None = None) -> list[int]:
    """Every live process below `root_pid`, children before grandchildren."""
    table = _process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, fields in table.items():
        children.setdefault(int(fields[1]), []).append(pid)
    found, queue = [], list(children.get(root_pid, []))
    while queue:
        pid = queue.pop(0)
        found.append(pid)
        queue.extend(children.get(pid, []))
    return found


def process_tree_cpu_seconds(root_pid: int) -> float:
    """User+system CPU seconds of a process and all its live descendants (from /proc)."""
    table = _process_table()
    tree = [root_pid, *descendants(root_pid, table)]
    return sum((int(table[pid][11]) + int(table[pid][12])) / _CLOCK_TICKS for pid in tree if pid in table)


def process_tree_rss_mib(root_pid: int) -> float:
    """Resident memory of a process and its descendants, MiB (pages shared between them are
    counted once per process, as `ps` does)."""
    total_kib = 0
    for pid in [root_pid, *descendants(root_pid)]:
        try:
            with open(f"/proc/{pid}/status") as f:
                total_kib += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except OSError:
            continue
    return total_kib / 1024


class RtmpServer:
    """nginx with the RTMP module, started by scripts/rtmp_server.sh in a private folder."""

    def __init__(self, run_dir: Path, rtmp_port: int | None = None, hls_port: int | None = None) -> None:
        self.run_dir = run_dir
        self.rtmp_port = rtmp_port or free_port()
        self.hls_port = hls_port or free_port()

    @property
    def base_url(self) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live"

    def _script(self, action: str) -> None:
        env = {**os.environ, "RTMP_PORT": str(self.rtmp_port), "HLS_PORT": str(self.hls_port)}
        subprocess.run(
            ["bash", str(PROJECT_ROOT / "scripts" / "rtmp_server.sh"), action, str(self.run_dir)],
            env=env, check=True, capture_output=True, timeout=300,
        )  # fmt: skip

    def start(self) -> None:
        self._script("start")
        deadline = time.monotonic() + 10
        while not port_open(self.rtmp_port):
            if time.monotonic() > deadline:
                raise RuntimeError("nginx RTMP port did not open")
            time.sleep(0.05)

    def stop(self) -> None:
        self._script("stop")

    def kill(self) -> None:
        """SIGKILL the master and its workers (a crash, not a shutdown)."""
        pid_file = self.run_dir / "logs" / "nginx.pid"
        master = int(pid_file.read_text().strip())
        workers = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
        for pid in [master, *map(int, workers)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pid_file.unlink(missing_ok=True)
        deadline = time.monotonic() + 5
        while port_open(self.rtmp_port) and time.monotonic() < deadline:
            time.sleep(0.05)


class ServiceProcess:
    """`python -m poc run` in its own process group, its log captured to a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "POC_ENV_FILE": "/nonexistent", **env}
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self) -> "ServiceProcess":
        self._log = self.log_path.open("ab")
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "poc", "run"],
            env=self.env, cwd=PROJECT_ROOT, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.env['HTTP_PORT']}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, pattern: str, timeout: float, start: int = 0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log_text()[start:])
            if found:
                return found
            if self.process and self.process.poll() is not None:
                raise AssertionError(f"service exited ({self.process.returncode}):\n{self.log_text()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"no log line matching {pattern!r} in {timeout} s:\n{self.log_text()[-3000:]}")

    def get(self, path: str, timeout: float = 5) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.http + path, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def signal(self, sig: int) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, sig)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 8) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.process.returncode
