"""Elscint's private ``PMSCT_RLE1`` compression: CT scanners (Elscint, then Philips) that store the
pixels, run-length and delta encoded, in the private element (07a1,100a) instead of (7fe0,0010).

Orthanc decodes it (``DicomImageDecoder::DecodePsmctRle1``, a port of GDCM's sample ``rle2img``) for
its previews and raw frames; so does luabroker, with the same two passes. Unlike that port, every read
is bounded: a truncated escape sequence ends the data instead of reading past it.
"""
from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

from broker.core.tags import PIXEL_DATA

COMPRESSION_TYPE = 0x07A11011
CONTENT = 0x07A1100A
_REPEAT, _ABSOLUTE = 0xA5, 0x5A


def is_psmct_rle1(ds: Dataset) -> bool:
    element = ds.get(COMPRESSION_TYPE)
    value = element.value if element is not None else None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return isinstance(value, str) and value.strip(" \0") == "PMSCT_RLE1"


def decoded_pixels(ds: Dataset) -> bytes | None:
    """The pixels (16-bit little endian) of a ``PMSCT_RLE1`` dataset, ``None`` if it is not one."""
    if not is_psmct_rle1(ds) or CONTENT not in ds:
        return None
    content = ds[CONTENT].value
    if not isinstance(content, bytes):
        return None
    return _delta_decode(_run_length_decode(content))


def add_decoded_pixels(ds: Dataset) -> bool:
    """Give a ``PMSCT_RLE1`` dataset the Pixel Data its private element holds (what Orthanc reads in
    place of a missing one); false when ``ds`` is not such a dataset."""
    pixels = decoded_pixels(ds)
    if pixels is None:
        return False
    ds.add_new(PIXEL_DATA, "OW", pixels)
    return True


def _run_length_decode(data: bytes) -> bytes:
    """``a5 n v`` stands for ``n + 1`` times ``v``; other bytes stand for themselves."""
    out = bytearray()
    start = 0
    while True:
        escape = data.find(_REPEAT, start)
        if escape < 0 or escape + 2 >= len(data):
            out += data[start:] if escape < 0 else data[start:escape]
            return bytes(out)
        out += data[start:escape]
        out += bytes([data[escape + 2]]) * (data[escape + 1] + 1)
        start = escape + 3


def _delta_decode(data: bytes) -> bytes:
    """``5a lo hi`` is an absolute 16-bit value; any other byte a signed difference from the previous
    value (modulo 2^16)."""
    values: list[np.ndarray] = []
    previous = 0
    start = 0
    while start < len(data):
        absolute = data.find(_ABSOLUTE, start)
        end = len(data) if absolute < 0 else absolute
        if end > start:
            deltas = np.frombuffer(data[start:end], dtype=np.int8).astype(np.int64)
            run = (previous + np.cumsum(deltas)) & 0xFFFF
            values.append(run)
            previous = int(run[-1])
        if absolute < 0 or absolute + 2 >= len(data):
            break
        previous = data[absolute + 1] | (data[absolute + 2] << 8)
        values.append(np.array([previous], dtype=np.int64))
        start = absolute + 3
    if not values:
        return b""
    return np.concatenate(values).astype("<u2").tobytes()
