"""Process limits the service raises for itself at start-up."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

# Where the hard limit is "unlimited" (the kernel refuses an infinite soft limit for files).
UNLIMITED_FALLBACK = 1 << 20


def raise_open_file_limit() -> int:
    """Raise the soft limit on open files to the hard one; returns the limit now in force.

    The operator's HTTP port accepts every connection (hypercorn has no cap), and systemd's
    default soft limit is 1024: one client holding a few hundred idle connections open would
    leave no descriptor for an ffmpeg restart or a RabbitMQ reconnect, taking the stream off
    air for a viewer because of a browser tab. The hard limit is what the administrator allows.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = UNLIMITED_FALLBACK if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            return wanted
        except (ValueError, OSError) as error:  # a container's seccomp or an odd kernel
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, wanted, error)
    return soft
