"""The pixel views of a frame, as Orthanc 1.10 answers them (``/instances/{id}/frames/{n}/...``):

* ``raw``: the frame as stored: its bytes in native pixel data, its fragments in encapsulated pixel
  data (the MIME type of the codec); ``raw.gz`` gzipped;
* ``image-uint8``, ``image-uint16``, ``image-int16``: the stored values of a grayscale frame, clamped
  to the type (``int16`` then written as its 16-bit pattern); colour frames are refused (415);
* ``matlab``: a MATLAB expression of the stored values;
* ``numpy``: a ``.npy`` file, float32 rescaled values by default (``rescale=0``: the stored type),
  shaped ``(rows,columns,channels)`` for a frame and ``(frames, rows,columns,channels)`` for an
  instance, with Orthanc's header text.
"""
from __future__ import annotations

import gzip
import io
import zipfile

import numpy as np
import pydicom
from pydicom.encaps import generate_frames

from broker.core import psmct_rle1
from broker.core.preview import (
    BadBinaryImage,
    Decoded,
    NoPixelData,
    NoSuchFrame,
    Undecodable,
    decode_frame,
    number_of_frames,
)

__all__ = ["BadBinaryImage", "BitPacked", "NoPixelData", "NoSuchFrame", "Undecodable", "clamped", "frame_count",
           "matlab", "numpy_file", "raw_frame"]

_CODEC_MIME = {**{f"1.2.840.10008.1.2.4.{n}": "image/jpeg" for n in (*range(50, 67), 70)},
               "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
               **{f"1.2.840.10008.1.2.4.{n}": "image/jp2" for n in range(90, 94)}}
_RANGES = {"uint8": (0, 255, np.uint8), "uint16": (0, 65535, np.uint16), "int16": (-32768, 32767, np.int16)}


def frame_count(data: bytes) -> int:
    """``NumberOfFrames``, 1 without it (with or without pixel data, as Orthanc counts)."""
    return number_of_frames(pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True))


class BitPacked(Exception):
    """Frames of bit-packed pixel data (``BitsAllocated`` 1) whose rows do not fill whole bytes."""


def raw_frame(data: bytes, frame: int) -> tuple[bytes, str]:
    """The bytes of one frame as stored, and their MIME type."""
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    if "PixelData" not in ds and not psmct_rle1.add_decoded_pixels(ds):
        raise NoPixelData("The instance has no pixel data")
    if int(ds.get("BitsAllocated", 8) or 8) == 1 and int(ds.get("Columns", 0) or 0) % 8:
        raise BitPacked("Bad number of columns for a black-and-white image (a multiple of 8 is needed)")
    count = number_of_frames(ds)
    if not 0 <= frame < count:
        raise NoSuchFrame(f"Frame {frame} does not exist (the instance has {count})")
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    pixels = ds.PixelData
    if ds["PixelData"].is_undefined_length:
        frames = list(generate_frames(pixels, number_of_frames=count))
        return frames[frame], _CODEC_MIME.get(syntax, "application/octet-stream")
    try:
        size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * int(ds.BitsAllocated) // 8
    except (AttributeError, TypeError, ValueError):
        size = len(pixels) // count  # an incomplete image description: the even share of each frame
    return pixels[frame * size:(frame + 1) * size], "application/octet-stream"


def is_encapsulated(data: bytes) -> bool:
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    return "PixelData" in ds and bool(ds["PixelData"].is_undefined_length)


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def clamped(decoded: Decoded, kind: str) -> np.ndarray:
    """``image-uint8``, ``image-uint16``, ``image-int16``: the stored values of a grayscale frame."""
    if decoded.samples != 1:
        raise Undecodable("Only grayscale frames can be converted to an integer image")
    low, high, dtype = _RANGES[kind]
    return np.clip(decoded.array.astype(np.int64), low, high).astype(dtype)


def matlab(decoded: Decoded) -> str:
    array = decoded.array
    if decoded.samples == 1:
        rows = " ; ".join(" ".join(str(int(v)) for v in row) for row in array)
        return f"double([ {rows} ])"
    rows_count, columns = array.shape[:2]
    values = " ".join(str(int(v)) for v in array.reshape(-1))
    return f"double(permute(reshape([ {values} ], [ 3 {columns} {rows_count} ]), [ 3 2 1 ]))"


def _values(decoded: Decoded, rescale: bool) -> np.ndarray:
    array = decoded.array if decoded.samples == 3 else decoded.array[..., np.newaxis]
    if decoded.samples == 3:
        return array.astype(np.uint8)
    if not rescale:
        return array
    ds = decoded.dataset
    try:
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
    except (TypeError, ValueError):
        slope, intercept = 1.0, 0.0
    return (array.astype(np.float64) * slope + intercept).astype(np.float32)


def _npy(array: np.ndarray, shape_text: str) -> bytes:
    """A ``.npy`` file with Orthanc's header text (numpy's own spaces its shape differently)."""
    array = array.astype(array.dtype.newbyteorder("<"))
    descr = f"<{array.dtype.kind}{array.dtype.itemsize}"
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin-1") + \
        np.ascontiguousarray(array).tobytes()


def numpy_file(instances: list[bytes], frame: int | None, rescale: bool, compress: bool) -> bytes:
    """One frame of one instance (``frame``; shape without the frame axis), or every frame of the
    ``instances`` in order (None)."""
    if frame is not None:
        arrays = [_values(decode_frame(instances[0], frame), rescale)]
    else:
        arrays = [_values(decode_frame(data, index), rescale)
                  for data in instances for index in range(frame_count(data))]
    if not arrays:
        raise Undecodable("No pixel data")
    stacked = arrays[0] if frame is not None else np.stack(arrays)
    dims = ",".join(str(n) for n in arrays[0].shape)
    content = _npy(stacked, f"({dims})" if frame is not None else f"({len(arrays)}, {dims})")
    if not compress:
        return content
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("arr_0.npy", content)
    return buffer.getvalue()
