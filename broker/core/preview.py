"""Previews of DICOM frames, as Orthanc 1.10's ``/instances/{id}/preview`` renders them.

``render_frame(data, frame)`` decodes one frame with pydicom (uncompressed, deflated, big endian, RLE
natively; JPEG 2000 through pylibjpeg-openjpeg or Pillow), or with DCMTK's codecs as Orthanc does
(JPEG and JPEG-LS, ``broker.core.dcmtk_codec``), or Elscint's ``PMSCT_RLE1`` (``broker.core.psmct_rle1``),
and applies Orthanc's preview rules (``PreviewDecodedImage``):

* grayscale of 8 or 16 bits (signed or not): the stored values (no rescale slope/intercept, no
  window) are stretched to 0..255 with their minimum and maximum, ``floor((v - min) * 255 / (max - min)
  + 0.5)`` in single precision, as Orthanc computes it;
  a constant image is black; MONOCHROME1 is then inverted;
* colour: RGB as is (YBR is converted to RGB by the decoder; uncompressed YBR is refused, as Orthanc
  does), 16 bits per sample keep their high byte;
  PALETTE COLOR goes through its lookup table;
* anything else (32-bit grayscale such as RT doses, float pixels, no pixel data, a transfer syntax that
  no installed decoder handles) is ``Undecodable``: Orthanc answers 415 with an empty body.

``negotiate(accept)`` picks the format as Orthanc's ``HttpContentNegociation`` does, and ``encode``
writes PNG (the bytes libpng writes for Orthanc, ``broker.core.png``), JPEG (``quality`` 1..100, 90 by
default) or PAM.
"""
from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.encaps import encapsulate, generate_frames
from pydicom.multival import MultiValue

from broker.core import dcmtk_codec, png, psmct_rle1
from broker.core.dicom_file import read_lenient, write_dataset
from broker.core.tags import PIXEL_DATA

PNG = "image/png"
JPEG = "image/jpeg"
PAM = "image/x-portable-arbitrarymap"
FORMATS = (PNG, JPEG, PAM)  # Orthanc's order: it wins ties between equally good matches
DEFAULT_JPEG_QUALITY = 90


class Undecodable(Exception):
    """The frame cannot be rendered (Orthanc: 415 Unsupported Media Type, empty body)."""


class BadBinaryImage(Undecodable):
    """A binary image (``BitsAllocated`` 1) whose rows do not fill whole bytes: Orthanc refuses it."""


class NoPixelData(Undecodable):
    """The instance has no pixel data."""


class NoSuchFrame(Exception):
    """The frame index is out of range (Orthanc: 404, empty body)."""


@dataclass
class Rendered:
    pixels: np.ndarray  # uint8, (rows, columns) or (rows, columns, 3); or 16-bit grayscale

    @property
    def is_color(self) -> bool:
        return self.pixels.ndim == 3


def number_of_frames(ds: pydicom.Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


@dataclass
class Decoded:
    """One frame as stored: grayscale ``(rows, columns)`` or colour ``(rows, columns, 3)`` values."""
    array: np.ndarray
    samples: int
    bits: int
    photometric: str
    dataset: pydicom.Dataset


def decode_frame(data: bytes, frame: int = 0) -> Decoded:
    """Decode one frame (palette colour through its lookup table); ``NoSuchFrame``, ``Undecodable``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = read_lenient(data)
        except Exception as exc:
            raise Undecodable(f"Cannot read the DICOM file: {exc}") from exc
        if PIXEL_DATA not in ds and not psmct_rle1.add_decoded_pixels(ds):  # Elscint's private compression
            raise NoPixelData("The instance has no pixel data")
        if "PhotometricInterpretation" not in ds:  # DCMTK refuses it before it counts the frames
            raise Undecodable("The image has no PhotometricInterpretation")
        if int(ds.get("BitsAllocated", 8) or 8) == 1 and int(ds.get("Columns", 0) or 0) % 8:
            raise BadBinaryImage("Bad number of columns for a black-and-white image (a multiple of 8 is needed)")
        if frame < 0 or frame >= number_of_frames(ds):
            raise NoSuchFrame(f"Frame {frame} does not exist (the instance has {number_of_frames(ds)})")
        ds, frame = _decompressed_by_dcmtk(ds, data, frame)
        # DCMTK reads a frame without these as one unsigned sample; pydicom needs them written.
        for keyword, default in (("SamplesPerPixel", 1), ("PixelRepresentation", 0)):
            if keyword not in ds:
                setattr(ds, keyword, default)
        try:
            samples = int(ds.get("SamplesPerPixel", 1) or 1)
            bits = int(ds.BitsAllocated)
            photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
        except Exception as exc:
            raise Undecodable(f"Incomplete image description: {exc}") from exc
        if samples == 1 and bits > 16:
            raise Undecodable(f"Grayscale images of {bits} bits are not decoded")
        if photometric.startswith("YBR") and not ds["PixelData"].is_undefined_length:
            raise Undecodable(f"Uncompressed {photometric} is not decoded (neither does Orthanc)")
        try:
            array = pydicom.pixels.pixel_array(ds, index=frame)
        except Exception as exc:
            syntax = ds.file_meta.get("TransferSyntaxUID", "?")
            raise Undecodable(f"Cannot decode the pixel data ({syntax}): {exc}") from exc
        if photometric == "PALETTE COLOR" and samples == 1:
            try:
                colors = pydicom.pixels.apply_color_lut(array, ds)
                array = _color_to_8bit(colors, 16 if colors.dtype.itemsize > 1 else 8)
            except Exception as exc:
                raise Undecodable(f"Cannot apply the palette: {exc}") from exc
            return Decoded(array, 3, 8, "RGB", ds)
    if not ((samples == 3 and array.ndim == 3) or (samples == 1 and array.ndim == 2)):
        raise Undecodable(f"Unsupported image layout: {samples} samples per pixel")
    if bits == 1:  # a binary image (a segmentation): Orthanc reads its pixels as 0 and 255
        return Decoded(array.astype(np.uint8) * 255, samples, 8, photometric, ds)
    return Decoded(array, samples, bits, photometric, ds)


def _decompressed_by_dcmtk(ds: pydicom.Dataset, data: bytes, frame: int) -> tuple[pydicom.Dataset, int]:
    """JPEG and JPEG-LS are decoded by DCMTK's codecs, which Orthanc uses: the same pixels (the
    decoders of lossy JPEG round differently) and the syntaxes pydicom's plugins cannot read
    (12-bit extended JPEG). The dataset holding the frame, and the frame's index in it: the frame of
    a multi-frame instance is decoded alone (as a one-frame file), not the whole instance."""
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) if getattr(ds, "file_meta", None) else ""
    if syntax not in dcmtk_codec.DECODERS or not ds[PIXEL_DATA].is_undefined_length:
        return ds, frame
    try:
        count = number_of_frames(ds)
        if count > 1:
            fragment = list(generate_frames(ds.PixelData, number_of_frames=count))[frame]
            ds.PixelData, ds.NumberOfFrames = encapsulate([fragment]), 1
            data = write_dataset(ds)
        return read_lenient(dcmtk_codec.decode(data, syntax)), 0
    except Exception as exc:
        raise Undecodable(f"Cannot decode the pixel data ({syntax}): {exc}") from exc


def render_frame(data: bytes, frame: int = 0) -> Rendered:
    decoded = decode_frame(data, frame)
    if decoded.samples == 3:
        return Rendered(_color_to_8bit(decoded.array, decoded.bits))
    return Rendered(_stretch(decoded.array, invert=decoded.photometric == "MONOCHROME1"))


def _first_number(value: Any) -> float | None:
    """The first value of a DS (multi-valued or not), or None."""
    if value is None:
        return None
    first = value[0] if isinstance(value, (list, tuple, MultiValue)) else value
    try:
        return float(first)
    except (TypeError, ValueError):
        return None


def _frame_groups(ds: pydicom.Dataset, frame: int, name: str) -> Iterator[pydicom.Dataset]:
    """The first item of the functional group ``name`` for the frame: in its per-frame groups, then in
    the shared ones (each only when there)."""
    for groups in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        sequence = ds.get(groups)
        if not sequence:
            continue
        item = sequence[frame] if groups.startswith("PerFrame") and frame < len(sequence) else sequence[0]
        group = item.get(name)
        if group:
            yield group[0]


def _window_of(ds: pydicom.Dataset, frame: int) -> tuple[float, float] | None:
    """The frame's window: its FrameVOILUTSequence (per frame, then shared), else the top-level one."""
    for voi in _frame_groups(ds, frame, "FrameVOILUTSequence"):
        center, width = _first_number(voi.get("WindowCenter")), _first_number(voi.get("WindowWidth"))
        if center is not None and width:
            return center, width
    center, width = _first_number(ds.get("WindowCenter")), _first_number(ds.get("WindowWidth"))
    return (center, width) if center is not None and width else None


def _rescale(ds: pydicom.Dataset, frame: int) -> tuple[float, float]:
    """(slope, intercept) of the frame: its PixelValueTransformationSequence, else the top-level ones."""
    for transformation in _frame_groups(ds, frame, "PixelValueTransformationSequence"):
        return (_first_number(transformation.get("RescaleSlope")) or 1.0,
                _first_number(transformation.get("RescaleIntercept")) or 0.0)
    return _first_number(ds.get("RescaleSlope")) or 1.0, _first_number(ds.get("RescaleIntercept")) or 0.0


def render_windowed(data: bytes, frame: int, center: float | None, width: float | None) -> Rendered:
    """``/rendered``: the rescaled values of a grayscale frame through a window (the given one, else the
    frame's, else the whole range of its pixel format from 0), ``floor((v - (center - width / 2)) * 255 /
    width)`` clamped, as Orthanc 1.10; colour frames as they are."""
    decoded = decode_frame(data, frame)
    if decoded.samples == 3:
        return Rendered(_color_to_8bit(decoded.array, decoded.bits))
    ds = decoded.dataset
    slope, intercept = _rescale(ds, frame)
    values = decoded.array.astype(np.float64) * slope + intercept
    window = (center, width) if center is not None and width else _window_of(ds, frame)
    if window is None:  # the whole range of the pixel format, from 0 (Orthanc's default)
        span = float(2 ** (8 * decoded.array.dtype.itemsize))
        window = (span / 2, span)
    c, w = window
    result = np.clip(np.floor((values - (c - w / 2)) * 255.0 / w), 0, 255).astype(np.uint8)
    return Rendered(255 - result if decoded.photometric == "MONOCHROME1" else result)


def _stretch(array: np.ndarray, invert: bool) -> np.ndarray:
    values = array.astype(np.int64)
    low, high = int(values.min()), int(values.max())
    if low == high:
        result = np.zeros(values.shape, dtype=np.uint8)
    else:
        # Orthanc's ShiftScale computes in single precision; so does this, to round the same pixels the same way.
        scale = np.float32(np.float32(255.0) / np.float32(high - low))
        scaled = np.floor((values.astype(np.float32) + np.float32(-low)) * scale + np.float32(0.5))
        result = np.clip(scaled, 0, 255).astype(np.uint8)
    return 255 - result if invert else result


def _color_to_8bit(array: np.ndarray, bits: int) -> np.ndarray:
    if array.dtype == np.uint8 or bits <= 8:
        return array.astype(np.uint8)
    shift = max(0, min(bits, array.dtype.itemsize * 8) - 8)
    return (array.astype(np.uint64) >> shift).astype(np.uint8)


def resized(image: Rendered, width: float | None, height: float | None, smooth: bool) -> Rendered:
    """The image scaled to fit ``width`` x ``height`` (either may be absent), keeping its aspect ratio."""
    rows, columns = image.pixels.shape[:2]
    scales = [limit / size for limit, size in ((width, columns), (height, rows)) if limit]
    if not scales:
        return image
    scale = min(scales)
    size = (max(1, round(columns * scale)), max(1, round(rows * scale)))
    picture = Image.fromarray(np.ascontiguousarray(image.pixels), "RGB" if image.is_color else "L")
    picture = picture.resize(size, Image.Resampling.BILINEAR if smooth else Image.Resampling.NEAREST)
    return Rendered(np.asarray(picture))


# Content negotiation (Orthanc's HttpContentNegociation: specificity first, then quality, then order).
def negotiate(accept: str | None, formats: tuple[str, ...] = FORMATS) -> str | None:
    """The format to answer for an ``Accept`` header (None: no header, which means ``*/*``) among
    ``formats``; None when nothing matches (Orthanc: 404, empty body)."""
    if accept is None:
        accept = "*/*"
    best: tuple[int, float] | None = None
    chosen = None
    for media_range in accept.split(","):
        parameters = [p.strip() for p in media_range.split(";")]
        if not parameters or "/" not in parameters[0]:
            continue
        kind, _, subtype = parameters[0].partition("/")
        if "/" in subtype:
            continue
        quality = 1.0
        for parameter in parameters[1:]:
            name, _, value = parameter.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 1.0
        for mime in formats:
            handler_kind, handler_subtype = mime.split("/")
            if kind == "*" and subtype == "*":
                level = 0
            elif kind == handler_kind and subtype == "*":
                level = 1
            elif kind == handler_kind and subtype == handler_subtype:
                level = 2
            else:
                continue
            if best is None or (level, quality) > best:
                best, chosen = (level, quality), mime
    return chosen


def parse_quality(text: str | None) -> int | None:
    """``?quality=`` of a JPEG: 1..100 (None when invalid: Orthanc answers 415)."""
    if text is None:
        return DEFAULT_JPEG_QUALITY
    text = text.strip()
    if not text.isdigit():
        return None
    quality = int(text)
    return quality if 1 <= quality <= 100 else None


def encode(image: Rendered, mime: str, quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    """PNG, JPEG or PAM of 8-bit pixels, or (PNG and PAM only) of 16-bit grayscale ones."""
    pixels = np.ascontiguousarray(image.pixels)
    wide = pixels.dtype.itemsize == 2
    if mime == PAM:
        rows, columns = pixels.shape[:2]
        depth = 3 if image.is_color else 1
        header = (f"P7\nWIDTH {columns}\nHEIGHT {rows}\nDEPTH {depth}\nMAXVAL {65535 if wide else 255}\n"
                  f"TUPLTYPE {'RGB' if image.is_color else 'GRAYSCALE'}\nENDHDR\n")
        return header.encode("ascii") + (pixels.astype(">u2") if wide else pixels).tobytes()
    if mime == PNG:
        return png.encode(pixels)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB" if image.is_color else "L").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()
