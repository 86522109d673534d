"""The project's nginx RTMP server and the service process (shared with the benchmarks)."""

from poc.bench.harness import RtmpServer, ServiceProcess, free_port, port_open  # noqa: F401
from poc.paths import PROJECT_ROOT as ROOT  # noqa: F401
