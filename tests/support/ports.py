"""Free TCP ports on 127.0.0.1 for the servers the tests start, never the same in two xdist workers.

Binding port 0 and closing the socket is racy: the port comes from the kernel's ephemeral range,
where the kernel also picks the local port of every outgoing connection, so between the close and
the server's own bind another worker's client (or any process) may take it. These ports come from
below the ephemeral range (32768 on Linux), from a block of its own for each worker (``gw3`` gets
23000-23999), starting at a random offset so that two runs on one machine rarely meet; a port that
something else holds is skipped.
"""
from __future__ import annotations

import itertools
import os
import random
import socket

BASE = 20000
BLOCK = 1000
#: 12 blocks end at 31999, below the ephemeral range; more workers share blocks (index modulo 12).
BLOCKS = 12


def worker_index() -> int:
    """0 for ``gw0`` or a run without xdist, 1 for ``gw1``, ..."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0


_first = BASE + (worker_index() % BLOCKS) * BLOCK
_offsets = itertools.count(random.randrange(BLOCK))


def free_port() -> int:
    """A port of this worker's block that nothing listens on (or holds) right now."""
    for _ in range(BLOCK):
        port = _first + next(_offsets) % BLOCK
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {_first}-{_first + BLOCK - 1}")
