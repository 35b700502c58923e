"""DICOM files: reading, writing and transcoding them, the one place the broker does so with pydicom.

Reading. ``read_lenient`` reads a stored file leniently (the store, the previews), ``read_dataset``
the same as an ``OrthancError`` when it fails (the REST handlers, the modification);
``read_part10`` strictly, with its file meta information (what the SCU sends), and ``peek_meta`` only
that meta information.

Writing. ``write_dataset`` writes the dataset back in its transfer syntax (or another one) with a new
file meta information group (version, SOP class and instance, transfer syntax, this implementation's
class UID and version name), as DCMTK writes it for Orthanc: the original meta elements such as
``SourceApplicationEntityTitle`` are not kept.

Transcoding. Orthanc transcodes through DCMTK (and its plugins); here JPEG and JPEG-LS go through
DCMTK's codecs too (``broker.core.dcmtk_codec``), the rest through pydicom.
``transcode_dataset`` (the ``Transcode`` option of ``/modify``, archives, peers): any transfer syntax
that can be decoded (uncompressed, RLE and JPEG 2000 by pydicom, JPEG and JPEG-LS by DCMTK) can
become one of the uncompressed little-endian syntaxes, Deflated, RLE Lossless, JPEG 2000 (pydicom),
or JPEG baseline, extended, lossless, lossless SV1, JPEG-LS lossless and near-lossless (DCMTK;
lossy compression gives a new SOP Instance UID, as in Orthanc) and Explicit VR Big Endian (DCMTK);
other targets (video, HTJ2K)
raise ``CannotTranscode``, which the callers turn into Orthanc's answers (500 "Cannot transcode"
for an instance, "keep the original transfer syntax" for a resource job).
``transcode_to_accepted`` (the C-STORE SCU): the first uncompressed syntax a receiver accepted,
decompressing first when needed.
"""
from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Sequence

import pydicom
from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    UID_dictionary,
)

from broker import __version__
from broker.core import dcmtk_codec
from broker.core.tags import PIXEL_DATA, SOP_CLASS_UID, SOP_INSTANCE_UID, SPECIFIC_CHARACTER_SET
from broker.errors import ErrorCode, OrthancError

# The file meta information written by this implementation. The version name (SH, 16 characters at
# most) names luabroker's version as DCMTK's ``OFFIS_DCMTK_367`` names DCMTK's.
IMPLEMENTATION_CLASS_UID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
IMPLEMENTATION_VERSION_NAME = f"LUABROKER_{__version__}"[:16]
#: The file meta's SOP class of a dataset that has none (DCMTK's ``UID_PrivateGenericFileSOPClass``).
UNKNOWN_SOP_CLASS = "1.2.276.0.7230010.3.1.0.1"
# What ``transcode_dataset`` can write.
UNCOMPRESSED_TARGETS = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian})
COMPRESSED_TARGETS = frozenset({RLELossless, JPEG2000Lossless, JPEG2000})
_ORTHANC_UNKNOWN = frozenset({"1.2.840.10008.1.2.1.98", "1.2.840.10008.1.20"})
_ORTHANC_PRIVATE = frozenset({"1.2.840.113619.5.2", "1.3.46.670589.33.1.4.1"})
#: The syntaxes an instance can be re-encoded to for sending without touching its pixel data, in order
#: of preference.
REENCODE_TARGETS = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)


# Values.
def element_text(element: DataElement) -> str:
    """An element's value as text, as DCMTK's ``getOFStringArray`` gives it (values joined by ``\\``)."""
    value = element.value
    if value is None:
        return ""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("latin_1").rstrip("\x00 ")
    return str(value)


def text_of(ds: Dataset, tag: int) -> str | None:
    element = ds.get(tag)
    return None if element is None else element_text(element)


# Reading and writing.
def read_lenient(data: bytes) -> Dataset:
    """A stored file, with or without file meta information; pydicom's exceptions and warnings pass."""
    return pydicom.dcmread(io.BytesIO(data), force=True)


def read_dataset(data: bytes) -> Dataset:
    """``read_lenient``, quietly; 400 ``BadFileFormat`` if not DICOM."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return read_lenient(data)
    except Exception as exc:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"Cannot parse the DICOM file: {exc}") from exc


def file_meta(sop_class: str | None, sop_instance: str | None, transfer_syntax: str) -> FileMetaDataset:
    """The file meta information group this implementation writes, as DCMTK writes it for Orthanc.

    Version, SOP class and instance, transfer syntax, class UID and version name; no
    ``SourceApplicationEntityTitle``. Its length, hence ``PixelDataOffset``, is the one Orthanc has.
    """
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class or UNKNOWN_SOP_CLASS)
    if sop_instance:
        meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def file_meta_bytes(sop_class: str | None, sop_instance: str, transfer_syntax: str) -> bytes:
    """``file_meta(...)`` encoded as pydicom's ``write_file_meta_info`` encodes it (explicit VR little
    endian, with its group length), byte for byte, without building a dataset: the C-STORE SCP writes one
    per received instance, and pydicom took about a millisecond for it.

    Raises ``ValueError`` for an empty ``sop_instance``, as ``write_file_meta_info`` does."""
    if not sop_instance:
        raise ValueError("The file meta information needs a Media Storage SOP Instance UID")
    body = b"".join((
        b"\x02\x00\x01\x00OB\x00\x00\x02\x00\x00\x00\x00\x01",
        _short_element(0x0002, "UI", _padded(sop_class or UNKNOWN_SOP_CLASS, b"\x00")),
        _short_element(0x0003, "UI", _padded(sop_instance, b"\x00")),
        _short_element(0x0010, "UI", _padded(transfer_syntax, b"\x00")),
        _META_IMPLEMENTATION))
    return struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body)) + body


def _padded(text: str, pad: bytes) -> bytes:
    value = text.encode("ascii")
    return value + pad if len(value) % 2 else value


def _short_element(element: int, vr: str, value: bytes) -> bytes:
    """A group 0002 element of a VR with a 2-byte length, explicit VR little endian."""
    return struct.pack("<HH2sH", 0x0002, element, vr.encode(), len(value)) + value


_META_IMPLEMENTATION = (_short_element(0x0012, "UI", _padded(IMPLEMENTATION_CLASS_UID, b"\x00"))
                        + _short_element(0x0013, "SH", _padded(IMPLEMENTATION_VERSION_NAME, b" ")))


def write_dataset(ds: Dataset, transfer_syntax: str | None = None) -> bytes:
    """The dataset as a DICOM file with a fresh file meta information group.

    Written as DCMTK writes it for Orthanc: sequences and items with explicit lengths, the group length
    elements the dataset had written again with their new values (pydicom alone drops them), and the
    values nobody changed kept byte for byte (even when SpecificCharacterSet is replaced). When the
    encoding changes (implicit/explicit VR, big endian), every element is decoded and re-encoded.
    """
    syntax = UID(transfer_syntax or current_transfer_syntax(ds))
    meta = file_meta(text_of(ds, SOP_CLASS_UID), text_of(ds, SOP_INSTANCE_UID), syntax)
    ds.file_meta = meta
    implicit = syntax == pydicom.uid.ImplicitVRLittleEndian
    little = syntax != pydicom.uid.ExplicitVRBigEndian
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if getattr(ds, "original_encoding", (None, None)) not in ((implicit, little), (None, None)):
                for _ in ds.iterall():  # raw values cannot be copied into another encoding
                    pass
            _explicit_lengths(ds)
            return _write(ds, meta, implicit, little, syntax == pydicom.uid.DeflatedExplicitVRLittleEndian)
    except OrthancError:
        raise
    except Exception as exc:
        raise OrthancError(ErrorCode.INTERNAL_ERROR, f"Cannot write the modified DICOM file: {exc}") from exc


def _explicit_lengths(ds: Dataset) -> None:
    """Sequences and items with explicit lengths (DCMTK's ``EET_ExplicitLength``)."""
    for tag in list(ds.keys()):
        stored = ds.get_item(tag)
        vr = stored.VR if stored is not None else None
        if not (vr == "SQ" or (vr is None and _dictionary_vr(int(tag)) == "SQ")):
            continue
        element = ds[tag]
        if element.VR != "SQ":
            continue
        element.is_undefined_length = False
        for item in element.value or []:
            item.is_undefined_length_sequence_item = False
            _explicit_lengths(item)


def _dictionary_vr(tag: int) -> str | None:
    """The dictionary VR of a tag, None for a tag the dictionary does not know."""
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def _write(ds: Dataset, meta: FileMetaDataset, implicit: bool, little: bool, deflated: bool) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element, write_file_meta_info

    charset = ds.get(SPECIFIC_CHARACTER_SET)
    encodings = convert_encodings(charset.value if charset is not None and charset.value else None)
    with_length = {tag.group for tag in ds.keys() if tag.element == 0 and tag.group > 6}
    body = DicomBytesIO()
    body.is_implicit_VR, body.is_little_endian = implicit, little
    # DCMTK keeps the length element of a group that was emptied: 0
    by_group: dict[int, list[BaseTag]] = {group: [] for group in with_length}
    for tag in sorted(ds.keys()):
        if tag.element != 0 or tag.group <= 6:
            by_group.setdefault(tag.group, []).append(tag)
    for group, tags in sorted(by_group.items()):
        part = DicomBytesIO()
        part.is_implicit_VR, part.is_little_endian = implicit, little
        for tag in tags:
            write_data_element(part, ds.get_item(tag), encodings)
        if group in with_length:
            write_data_element(body, DataElement(group << 16, "UL", len(part.getvalue())), encodings)
        body.write(part.getvalue())
    data = body.getvalue()
    if deflated:
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = compressor.compress(data) + compressor.flush()
    head = DicomBytesIO()
    head.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    return head.getvalue() + data

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


def is_dicomdir(data: bytes) -> bool:
    """Whether ``data`` is a DICOMDIR (its file meta says Media Storage Directory Storage)."""
    meta = peek_meta(data)
    return meta is not None and meta[0] == MEDIA_STORAGE_DIRECTORY


def read_part10(data: bytes) -> Dataset:
    """A Part-10 file, strictly: pydicom raises if it is not one (no file meta information...)."""
    return pydicom.dcmread(io.BytesIO(data), force=False)


def peek_meta(data: bytes) -> tuple[str, str] | None:
    """(SOP class, transfer syntax) from the file meta only (explicit VR little endian after ``DICM``),
    or None when the file has no readable meta information."""
    if data[128:132] != b"DICM":
        return None
    position, values = 132, {}
    while position + 8 <= len(data) and data[position:position + 2] == b"\x02\x00":
        element = struct.unpack_from("<H", data, position + 2)[0]
        vr = data[position + 4:position + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            (length,), start = struct.unpack_from("<I", data, position + 8), position + 12
        else:
            (length,), start = struct.unpack_from("<H", data, position + 6), position + 8
        values[element] = data[start:start + length].rstrip(b"\x00 ").decode("ascii", "replace")
        position = start + length
    if 0x0002 not in values or 0x0010 not in values:
        return None
    return values[0x0002], values[0x0010]


# Transcoding.
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
    pixels = ds.pixel_array if PIXEL_DATA in ds else None
    for _ in ds.iterall():
        pass
    if pixels is not None and pixels.dtype.itemsize > 1:
        ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
        ds[PIXEL_DATA].VR = "OW"


def transcode_dataset(ds: Dataset, target: str) -> None:
    """Bring ``ds`` to ``target`` in place (its ``file_meta.TransferSyntaxUID`` included)."""
    target = UID(target)
    current = current_transfer_syntax(ds)
    if current == target:
        return
    if target not in UNCOMPRESSED_TARGETS and target not in COMPRESSED_TARGETS and target not in dcmtk_codec.ENCODERS:
        raise CannotTranscode(f"Cannot transcode to transfer syntax: {target}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if PIXEL_DATA in ds and current.is_compressed:
                _decompress(ds, current)
            if getattr(ds, "original_encoding", (None, None))[1] is False:
                _from_big_endian(ds)
            if target in dcmtk_codec.ENCODERS and not UID(target).is_compressed:  # big endian
                _replace(ds, dcmtk_codec.encode(write_dataset(ds, ExplicitVRLittleEndian), target, 0))
            elif target in COMPRESSED_TARGETS or target in dcmtk_codec.ENCODERS:
                if PIXEL_DATA not in ds:
                    raise CannotTranscode(f"Cannot transcode to transfer syntax: {target} (no pixel data)")
                if target in dcmtk_codec.ENCODERS:
                    bits = int(ds.get("BitsStored", 0) or 0)
                    _replace(ds, dcmtk_codec.encode(write_dataset(ds, ExplicitVRLittleEndian), target, bits))
                else:
                    ds.compress(target)
            else:
                if getattr(ds, "file_meta", None) is None:
                    ds.file_meta = FileMetaDataset()
                ds.file_meta.TransferSyntaxUID = target
    except CannotTranscode:
        raise
    except Exception as exc:
        raise CannotTranscode(f"Cannot transcode to transfer syntax: {target} ({exc})") from exc


def transcoded(data: bytes, target: str) -> bytes:
    """A stored file in another transfer syntax; ``CannotTranscode``."""
    ds = read_dataset(data)
    transcode_dataset(ds, target)
    return write_dataset(ds, target)


def _decompress(ds: Dataset, current: UID) -> None:
    """Decode encapsulated pixel data in place: JPEG and JPEG-LS with DCMTK's codecs, as Orthanc
    does, the others with pydicom's pixel handlers (the SOP Instance UID is kept)."""
    if current in dcmtk_codec.DECODERS:
        _replace(ds, dcmtk_codec.decode(write_dataset(ds), current))
    else:
        ds.decompress(generate_instance_uid=False)


def _replace(ds: Dataset, data: bytes) -> None:
    """Make ``ds`` the dataset of the file ``data`` (what a codec wrote)."""
    new = pydicom.dcmread(io.BytesIO(data))
    ds.clear()
    ds.update(new)
    ds.file_meta = new.file_meta


def _reencode(ds: Dataset, target: str) -> Dataset:
    """The dataset in another uncompressed syntax (raw elements are converted by pydicom)."""
    ds.file_meta.TransferSyntaxUID = UID(target)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def transcode_to_accepted(ds: Dataset, source: str, accepted: Sequence[str]) -> tuple[Dataset, str]:
    """``ds`` re-encoded in the first of ``accepted`` it can be sent in, and that syntax.

    Uncompressed and deflated data is re-encoded; encapsulated pixel data is decompressed first
    (``_decompress``). Raises ``ValueError`` saying why not."""
    targets = [ts for ts in REENCODE_TARGETS if ts in accepted]
    if not targets:
        raise ValueError(f"the receiver accepted none of {', '.join(UID(ts).name for ts in REENCODE_TARGETS)} "
                         f"and not {UID(source).name}")
    if not UID(source).is_encapsulated:
        return _reencode(ds, targets[0]), targets[0]
    try:
        _decompress(ds, UID(source))
    except Exception as exc:
        raise ValueError(f"cannot decompress {UID(source).name}: {exc}") from exc
    return _reencode(ds, targets[0]), targets[0]
