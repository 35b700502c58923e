"""The TCP ports that every worker process listens on: each binds its own socket with ``SO_REUSEPORT``,
and the kernel hands each new connection to one of them (the DICOM server binds its own the same way,
``broker.dicom.scp.SharedPortServer``)."""
from __future__ import annotations

import socket


def shared_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``(host, port)`` beside the other workers' (not listening yet)."""
    shared = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        shared.bind((host, port))
    except OSError:
        shared.close()
        raise
    return shared
