"""PNG files written as libpng 1.6 writes them with its defaults, which is how Orthanc writes them.

Clients compare Orthanc's PNG answers by checksum (orthanc-tests' ``test_decode_transfer_syntax``
hashes ``/preview``), so the same pixels must give the same bytes, which Pillow's encoder does not.
libpng's defaults, reproduced here:

* each row is filtered by the filter (None, Sub, Up, Average, Paeth) whose output has the smallest
  sum of absolute values, the bytes read as signed; a tie goes to the first in that order;
* the filtered rows are deflated at level 6 with the ``Z_FILTERED`` strategy and memory level 8, in a
  window of 32 KiB shrunk to the smallest power of two that holds the data when that is 16 KiB or
  less, and the zlib header of a small image claims the smallest window (``optimize_cmf``);
* the compressed stream is cut into ``IDAT`` chunks of 8192 bytes; no ancillary chunks.

One quirk is Orthanc's own: a 16-bit PNG ends with ``IEND`` twice (its writer has libpng write the
whole image, end included, then ends it once more). Decoders stop at the first one.

Rows are filtered all at once with numpy: a filter reads the unfiltered previous row, never a
filtered one.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
IDAT_SIZE = 8192  # libpng's PNG_ZBUF_SIZE
_GRAY, _RGB = 0, 2


def encode(pixels: np.ndarray) -> bytes:
    """A PNG of ``pixels``: rows x columns (grayscale, 8 or 16 bits) or rows x columns x 3 (RGB, 8 bits)."""
    rows, columns = pixels.shape[:2]
    color = pixels.ndim == 3
    depth = 8 * pixels.dtype.itemsize
    samples = pixels.astype(f">u{pixels.dtype.itemsize}", copy=False)
    raw = np.ascontiguousarray(samples).view(np.uint8).reshape(rows, -1)
    filtered = _filter(raw, (3 if color else 1) * pixels.dtype.itemsize)
    header = struct.pack(">IIBBBBB", columns, rows, depth, _RGB if color else _GRAY, 0, 0, 0)
    stream = _deflate(filtered)
    chunks = [_chunk(b"IHDR", header)]
    chunks += [_chunk(b"IDAT", stream[i:i + IDAT_SIZE]) for i in range(0, len(stream), IDAT_SIZE)]
    chunks += [_chunk(b"IEND", b"")] * (2 if depth == 16 else 1)
    return SIGNATURE + b"".join(chunks)


def _filter(raw: np.ndarray, bpp: int) -> bytes:
    """Each row preceded by its filter type and filtered by the filter libpng's heuristic picks."""
    current = raw.astype(np.int16)
    above = np.zeros_like(current)
    above[1:] = current[:-1]
    left = np.zeros_like(current)
    left[:, bpp:] = current[:, :-bpp]
    above_left = np.zeros_like(current)
    above_left[:, bpp:] = above[:, :-bpp]
    estimate = left + above - above_left
    to_left, to_above, to_above_left = (np.abs(estimate - near) for near in (left, above, above_left))
    paeth = np.where((to_left <= to_above) & (to_left <= to_above_left), left,
                     np.where(to_above <= to_above_left, above, above_left))
    candidates = np.stack([current, current - left, current - above, current - (left + above) // 2,
                           current - paeth]) & 0xFF
    cost = np.where(candidates < 128, candidates, 256 - candidates).sum(axis=2, dtype=np.int64)
    best = np.argmin(cost, axis=0)  # the first of equal costs, as libpng's strict comparison
    chosen = candidates[best, np.arange(len(raw))]
    return np.concatenate([best[:, None], chosen], axis=1).astype(np.uint8).tobytes()


def _deflate(data: bytes) -> bytes:
    window_bits = 15
    if len(data) <= 16384:  # libpng's png_deflate_claim: the smallest window that holds the data
        half_window = 1 << (window_bits - 1)
        while len(data) + 262 <= half_window:
            half_window >>= 1
            window_bits -= 1
    compressor = zlib.compressobj(6, zlib.DEFLATED, max(window_bits, 9), 8, zlib.Z_FILTERED)
    return _optimize_cmf(compressor.compress(data) + compressor.flush(), len(data))


def _optimize_cmf(stream: bytes, size: int) -> bytes:
    """libpng's ``optimize_cmf``: a small image's zlib header claims the smallest window that holds it."""
    cmf = stream[0]
    if size > 16384 or cmf & 0x0F != 8 or cmf & 0xF0 > 0x70:
        return stream
    info = cmf >> 4
    half_window = 1 << (info + 7)
    if size > half_window:
        return stream
    while True:
        half_window >>= 1
        info -= 1
        if not (info > 0 and size <= half_window):
            break
    cmf = (cmf & 0x0F) | (info << 4)
    flags = stream[1] & 0xE0
    flags += 0x1F - ((cmf << 8) + flags) % 0x1F
    return bytes([cmf, flags]) + stream[2:]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
