"""Free ports on 127.0.0.1 for the servers the tooling starts (brokers, controllers, Connect, proxies, consumers'
control servers). Called on the caller's thread before the server binds."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(avoid: frozenset[int] = frozenset()) -> int:
    """A free port on 127.0.0.1 for a server started later, below the kernel's ephemeral range when possible.

    A port from the ephemeral range (what ``bind(0)`` returns) can be handed to an outgoing connection between
    this check and the server's bind; ports below the range are only ever taken by an explicit bind. ``avoid``
    holds ports already promised to another server of the same start that has not bound them yet.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(50):
        port = rng.randrange(10_000, max(low, 10_001))
        if port not in avoid and port_free(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def pick_port(preferred: int, avoid: frozenset[int] = frozenset()) -> tuple[int, bool]:
    """Return (port, is_preferred): the preferred port when it is free, otherwise any free port."""
    if preferred not in avoid and port_free(preferred):
        return preferred, True
    return free_port(avoid), False
