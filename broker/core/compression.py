"""How attachments are stored: as they are, or compressed as Orthanc's ``StorageCompression`` does
(zlib, its uncompressed size in front as 8 bytes little endian), so that a file written by one is
read by the other."""
from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass

NONE = 0
ZLIB = 1  # Orthanc's CompressionType_ZlibWithSize


def compress(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + zlib.compress(data)


def decompress(blob: bytes) -> bytes:
    if len(blob) < 8:
        raise ValueError("a compressed attachment starts with its size on 8 bytes")
    (size,) = struct.unpack_from("<Q", blob)
    data = zlib.decompress(blob[8:])
    if len(data) != size:
        raise ValueError(f"a compressed attachment of {len(data)} bytes says it has {size}")
    return data


@dataclass(frozen=True)
class Encoded:
    """What to write for ``data``, and what the index records about it."""
    stored: bytes
    size: int
    md5: str | None
    compressed_size: int
    compressed_md5: str | None
    compression: int


def encode(data: bytes, compression: int, with_md5: bool) -> Encoded:
    stored = compress(data) if compression == ZLIB else data
    md5 = hashlib.md5(data).hexdigest() if with_md5 else None
    stored_md5 = (hashlib.md5(stored).hexdigest() if compression == ZLIB else md5) if with_md5 else None
    return Encoded(stored, len(data), md5, len(stored), stored_md5, compression)


def stored_bytes(blob: bytes, compression: int) -> bytes:
    """The attachment's data from the bytes of its file."""
    return decompress(blob) if compression == ZLIB else blob
