"""The service raises its open-file limit to what the administrator allows, so a client holding
many idle connections to the operator's port cannot leave ffmpeg or RabbitMQ without a socket."""

from __future__ import annotations

import resource
import subprocess
import sys

PROBE = """
import resource
from poc.ops.limits import raise_open_file_limit
in_force = raise_open_file_limit()
print(in_force, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def _lowered_soft_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))


def test_a_low_soft_limit_is_raised_to_the_hard_one() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard > 256, "this machine's hard limit leaves nothing to raise"
    out = subprocess.run(
        [sys.executable, "-c", PROBE], preexec_fn=_lowered_soft_limit, capture_output=True, text=True, check=True
    ).stdout.split()
    expected = hard if hard != resource.RLIM_INFINITY else 1 << 20
    assert [int(v) for v in out] == [expected, expected]


def test_a_soft_limit_already_at_the_hard_one_is_left_alone() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def at_hard() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    out = subprocess.run(
        [sys.executable, "-c", PROBE], preexec_fn=at_hard, capture_output=True, text=True, check=True
    ).stdout.split()
    assert int(out[1]) == hard
