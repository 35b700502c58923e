"""``/tools/create-dicom``: a new DICOM instance from JSON, as Orthanc 1.10 makes it.

The body is ``{"Tags": {name: value}, "Content": data URI or list of them, "Parent": id,
"PrivateCreator": name}``, or (Orthanc's first form) the tags alone. Values are those of a
modification's ``Replace`` (strings, lists of objects for sequences, ``data:`` URIs for binary
values; ``broker.core.elements``). ``Content`` is an image (PNG or JPEG: the pixel module is filled
from it, one frame per image) or a PDF (an Encapsulated PDF). With a ``Parent``, the new instance
belongs to it: the main tags of the parent and of its ancestors are copied. What the body does not
give is generated as Orthanc does: ``SpecificCharacterSet`` of the default encoding, a random
``PatientID``, new study, series and instance UIDs, and the creation, study, series, acquisition and
content dates and times of now (Orthanc's first form sets neither the character set nor the dates).
"""
from __future__ import annotations

import base64
import io
import re
import uuid
from datetime import datetime
from typing import Any

import numpy as np
from PIL import Image
from pydicom.charset import python_encoding
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from broker.core.dicom_file import write_dataset
from broker.core.elements import ElementFactory
from broker.core.encodings import Encoding
from broker.core.tags import PIXEL_DATA, SPECIFIC_CHARACTER_SET, parse_tag
from broker.errors import ErrorCode, OrthancError

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
_DATA_URI = re.compile(r"^data:([^;,]*)(;base64)?,(.*)$", re.DOTALL)
#: (date tag, time tag) set to now unless given: instance creation, study, series, acquisition, content.
_UIDS = {0x0020000D: "StudyInstanceUID", 0x0020000E: "SeriesInstanceUID", 0x00080018: "SOPInstanceUID"}
_NOW_TAGS = ((0x00080012, 0x00080013), (0x00080020, 0x00080030), (0x00080021, 0x00080031),
             (0x00080022, 0x00080032), (0x00080023, 0x00080033))


def _bad_request(message: str) -> OrthancError:
    return OrthancError(ErrorCode.BAD_REQUEST, message)


def decode_data_uri(text: str) -> tuple[str, bytes]:
    match = _DATA_URI.match(text)
    if match is None:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Expected a data URI (data:<MIME type>;base64,...)")
    try:
        data = base64.b64decode(match.group(3), validate=True) if match.group(2) else match.group(3).encode()
    except ValueError:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Badly formatted data URI") from None
    return match.group(1), data


def _set_pixels(ds: Dataset, images: list[bytes]) -> None:
    """The pixel module of one frame per image (all of the same size and kind)."""
    frames = []
    for data in images:
        try:
            picture: Image.Image = Image.open(io.BytesIO(data))
            picture.load()
        except Exception as exc:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"Cannot decode the image: {exc}") from None
        if picture.mode in ("RGBA", "P", "CMYK", "YCbCr", "LA"):
            picture = picture.convert("RGB")
        elif picture.mode == "1":
            picture = picture.convert("L")
        frames.append((picture.mode, np.asarray(picture)))
    mode, first = frames[0]
    if any(m != mode or a.shape != first.shape for m, a in frames):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The frames of a multi-frame image must have the same size")
    color = mode == "RGB"
    bits = 8 if first.dtype.itemsize == 1 else 16
    ds.SamplesPerPixel = 3 if color else 1
    ds.PhotometricInterpretation = "RGB" if color else "MONOCHROME2"
    if color:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = first.shape[0], first.shape[1]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if len(frames) > 1:
        ds.NumberOfFrames = str(len(frames))
    dtype = "<u1" if bits == 8 else "<u2"
    pixels = b"".join(np.ascontiguousarray(a.astype(dtype)).tobytes() for _, a in frames)
    ds[PIXEL_DATA] = DataElement(PIXEL_DATA, "OB" if bits == 8 else "OW", pixels + b"\x00" * (len(pixels) % 2))


def _set_content(ds: Dataset, content: Any) -> None:
    uris = content if isinstance(content, list) else [content]
    if not uris or not all(isinstance(uri, str) for uri in uris):
        raise _bad_request('"Content" must be a data URI or a list of data URIs')
    decoded = [decode_data_uri(uri) for uri in uris]
    if len(decoded) == 1 and decoded[0][0] == "application/pdf":
        ds.SOPClassUID = ENCAPSULATED_PDF
        ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
        if "Modality" not in ds:
            ds.Modality = "OT"
        if "ConversionType" not in ds:
            ds.ConversionType = "WSD"  # workstation
        pdf = decoded[0][1]
        ds[0x00420011] = DataElement(0x00420011, "OB", pdf + b"\x00" * (len(pdf) % 2))
        return
    if any(mime not in ("image/png", "image/jpeg") for mime, _ in decoded):
        raise OrthancError(ErrorCode.NOT_IMPLEMENTED, "Content must be PNG or JPEG images, or one PDF")
    _set_pixels(ds, [data for _, data in decoded])


def create_instance(body: Any, default_encoding: Encoding, parent_tags: dict[int, str]) -> bytes:
    """The new DICOM file. ``parent_tags``: the tags copied from the parent (empty without one)."""
    if not isinstance(body, dict):
        raise _bad_request("The body must be a JSON object")
    tags = body.get("Tags", {}) if "Tags" in body else body
    if not isinstance(tags, dict):
        raise _bad_request('"Tags" must be a JSON object')
    private_creator = body.get("PrivateCreator", "") if "Tags" in body else ""
    if not isinstance(private_creator, str):
        raise _bad_request('"PrivateCreator" must be a string')
    ds = Dataset()
    given = {parse_tag(name): value for name, value in tags.items()}
    if body.get("Force") is not True:
        for tag, name in _UIDS.items():
            if tag in given:  # the identifiers are generated (or inherited) unless forced
                raise OrthancError(ErrorCode.CREATE_DICOM_OVERRIDE_TAG, name)
    charset = given.get(SPECIFIC_CHARACTER_SET)
    if isinstance(charset, str) and charset:
        terms = [term.strip() for term in charset.split("\\")]
        if not all(term in python_encoding or (i == 0 and not term) for i, term in enumerate(terms)):
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Unknown specific character set: {charset}")
        ds.SpecificCharacterSet = charset
    elif "Tags" in body and default_encoding.term is not None:  # Orthanc's first form has none
        ds.SpecificCharacterSet = default_encoding.term
    factory = ElementFactory(ds, private_creator)
    for tag, value in parent_tags.items():
        ds[tag] = DataElement(tag, factory.vr_of(tag, ds), value)
    content = body.get("Content") if "Tags" in body else None
    for tag, value in given.items():
        if tag == SPECIFIC_CHARACTER_SET:
            continue
        if tag == PIXEL_DATA and isinstance(value, str) and value.startswith("data:"):
            content = value  # Orthanc's first form: the image in "PixelData"
            continue
        ds[tag] = factory.make(tag, value, ds)
    if content is not None:
        _set_content(ds, content)
    now = datetime.now()
    for date_tag, time_tag in _NOW_TAGS if "Tags" in body else ():  # not in Orthanc's first form
        if date_tag not in ds:
            ds[date_tag] = DataElement(date_tag, "DA", now.strftime("%Y%m%d"))
        if time_tag not in ds:
            ds[time_tag] = DataElement(time_tag, "TM", now.strftime("%H%M%S.000000"))
    if "PatientID" not in ds:
        ds.PatientID = str(uuid.uuid4())
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if keyword not in ds:
            setattr(ds, keyword, generate_uid())
    return write_dataset(ds, ExplicitVRLittleEndian)
