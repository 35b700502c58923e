"""Frames on the pipes: a 4-byte big-endian length, then one msgpack value.

Pure functions, no process logic. A frame longer than ``max_len`` is a protocol error: the caller
kills the child (its output can no longer be trusted) and restarts it.

Strings: Python ``str`` travels as msgpack str, ``bytes`` as bin; from Lua, a valid UTF-8 string
arrives as ``str`` and any other as ``bytes``.
"""
from __future__ import annotations

import os
import struct
from typing import Any

import msgpack

DEFAULT_MAX_FRAME = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer broke the wire protocol (bad length, bad msgpack, bad message shape, EOF mid-frame)."""


def encode_frame(value: Any) -> bytes:
    payload: bytes = msgpack.packb(value, use_bin_type=True)
    return _HEADER.pack(len(payload)) + payload


def decode_payload(payload: bytes, max_len: int = DEFAULT_MAX_FRAME) -> Any:
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False, max_str_len=max_len,
                               max_bin_len=max_len, max_array_len=1_000_000, max_map_len=1_000_000)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ProtocolError(f"bad msgpack payload: {exc}") from exc


def read_exact(fd: int, n: int) -> bytes:
    """Read exactly ``n`` bytes from a blocking fd; ``b""`` on EOF before the first byte."""
    chunks = []
    remaining = n
    while remaining:
        chunk = os.read(fd, remaining)
        if not chunk:
            if remaining == n:
                return b""
            raise ProtocolError(f"EOF in the middle of a frame ({n - remaining} of {n} bytes)")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, max_len: int = DEFAULT_MAX_FRAME) -> Any:
    """Read one frame from ``fd``. Raises ``EOFError`` on a clean EOF, ``ProtocolError`` otherwise."""
    header = read_exact(fd, 4)
    if not header:
        raise EOFError("the sandbox closed its output")
    (length,) = _HEADER.unpack(header)
    if length > max_len:
        raise ProtocolError(f"frame of {length} bytes exceeds the maximum of {max_len}")
    return decode_payload(read_exact(fd, length), max_len)
