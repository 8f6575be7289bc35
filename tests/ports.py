"""Free TCP ports for the servers tests start.

A port the kernel hands out for ``bind(0)`` lies in the ephemeral range, which is also where
every outgoing connection takes its local port: between the test closing its probe socket and
the server binding, a client elsewhere on the machine may take it. Ports are therefore taken
below the ephemeral range, where only listeners go, and never twice in one test process.
"""

from __future__ import annotations

import random
import socket

__all__ = ["free_port"]

_LOWEST = 20000
_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (as of now), outside the ephemeral range."""
    high = _ephemeral_start()
    candidates = list(range(_LOWEST, high)) if high > _LOWEST + 1000 else []
    random.shuffle(candidates)
    for port in candidates:
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
