"""Changing the transfer syntax of a dataset (the ``Transcode`` option of ``/modify``), with pydicom.

Orthanc transcodes through DCMTK (and its plugins); here pydicom does it, with the decoders and
encoders it has: any transfer syntax whose pixel data pydicom can decode (uncompressed, RLE, JPEG
through Pillow/pylibjpeg, JPEG-LS and JPEG 2000 through pylibjpeg) can become one of the uncompressed
little-endian syntaxes, Deflated, RLE Lossless or JPEG 2000 (big-endian sources included); other targets (JPEG baseline,
JPEG-LS, big endian, video) raise ``CannotTranscode``, which the callers turn into Orthanc's answers (500
"Cannot transcode" for an instance, "keep the original transfer syntax" for a resource job).
"""
from __future__ import annotations

import warnings

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian,
                         JPEG2000, JPEG2000Lossless, RLELossless, UID_dictionary)

UNCOMPRESSED_TARGETS = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian})
COMPRESSED_TARGETS = frozenset({RLELossless, JPEG2000Lossless, JPEG2000})
_ORTHANC_UNKNOWN = frozenset({"1.2.840.10008.1.2.1.98", "1.2.840.10008.1.20"})
_ORTHANC_PRIVATE = frozenset({"1.2.840.113619.5.2", "1.3.46.670589.33.1.4.1"})


class CannotTranscode(Exception):
    """The dataset cannot be brought to the requested transfer syntax here."""


def is_known_transfer_syntax(uid: str) -> bool:
    """Orthanc 1.10's ``LookupTransferSyntax``: the DICOM transfer syntaxes of its time (not HTJ2K nor
    the SMPTE ones) and two private ones."""
    if uid in _ORTHANC_PRIVATE:
        return True
    entry = UID_dictionary.get(uid)
    if entry is None or entry[1] != "Transfer Syntax" or uid in _ORTHANC_UNKNOWN:
        return False
    return not uid.startswith(("1.2.840.10008.1.2.4.2", "1.2.840.10008.1.2.7."))


def current_transfer_syntax(ds: Dataset) -> UID:
    """The transfer syntax of a dataset: from its file meta information, else from the encoding it was
    read in (a file without meta information)."""
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if syntax:
        return UID(syntax)
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if little is False:
        return ExplicitVRBigEndian
    return ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian


def _from_big_endian(ds: Dataset) -> None:
    """Decode every element of a big-endian dataset (so that pydicom can write them in another
    byte order) and rewrite its pixel data in little endian."""
    pixels = ds.pixel_array if "PixelData" in ds else None
    for _ in ds.iterall():
        pass
    if pixels is not None and pixels.dtype.itemsize > 1:
        ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
        ds["PixelData"].VR = "OW"


def transcode_dataset(ds: Dataset, target: str) -> None:
    """Bring ``ds`` to ``target`` in place (its ``file_meta.TransferSyntaxUID`` included)."""
    target = UID(target)
    current = current_transfer_syntax(ds)
    if current == target:
        return
    if target not in UNCOMPRESSED_TARGETS and target not in COMPRESSED_TARGETS:
        raise CannotTranscode(f"Cannot transcode to transfer syntax: {target}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if "PixelData" in ds and current.is_compressed:
                ds.decompress()
            if getattr(ds, "original_encoding", (None, None))[1] is False:
                _from_big_endian(ds)
            if target in COMPRESSED_TARGETS:
                if "PixelData" not in ds:
                    raise CannotTranscode(f"Cannot transcode to transfer syntax: {target} (no pixel data)")
                ds.compress(target)
            else:
                if getattr(ds, "file_meta", None) is None:
                    ds.file_meta = FileMetaDataset()
                ds.file_meta.TransferSyntaxUID = target
    except CannotTranscode:
        raise
    except Exception as exc:
        raise CannotTranscode(f"Cannot transcode to transfer syntax: {target} ({exc})") from exc
