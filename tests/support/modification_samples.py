"""Helpers of the modification, anonymization and preview tests: a REST client over the routes that
need them, a file holding (nearly) every public tag, and a comparison of two DICOM files that ignores
only the identifiers each server generates at random (while checking that they are used consistently).
"""
from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom.datadict import DicomDictionary
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from broker.core.dicom_json import JsonFormat, dataset_to_json
from broker.core.dicom_parse import parse_dicom
from broker.core.origin import Origin
from broker.errors import BareHttpStatus, OrthancError
from broker.rest import instances, modification, preview, resources, system
from broker.rest.api import RestApi
from broker.rest.types import RestRequest

CLIENT = Origin.rest("127.0.0.1", "")

# Identifiers generated at random: DICOM UIDs (pydicom's root here, DCMTK's site root in Orthanc),
# UUIDs (PatientID) and the anonymization counter (its value depends on the history of each server).
GENERATED = re.compile(r"^(1\.2\.826\.0\.1\.3680043\.8\.498\.\d+|1\.2\.276\.0\.7230010\.3\.1\.[234]\.[\d.]+"
                       r"|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|Anonymized\d+)$")
# The file meta elements that name the writing software, and the profile text that names it too.
SOFTWARE_TAGS = {"0002,0012", "0002,0013"}
DEIDENTIFICATION_METHOD = "0012,0063"
_GROUP_LENGTH = re.compile(r"^/(?!0002)[0-9a-f]{4},0000$")


@dataclass
class Answer:
    status: int
    kind: str  # body, bare, error
    body: bytes = b""
    orthanc_status: int | None = None
    content_type: str = ""

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    def __init__(self, services: Any) -> None:
        self.api = RestApi(services, [resources.routes, instances.routes, system.routes,
                                          modification.routes, preview.routes])

    def call(self, method: str, path: str, body: bytes | Any = b"", headers: dict[str, str] | None = None,
             **query: str) -> Answer:
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        request = RestRequest(method, path, query=query, headers=headers or {}, body=body, origin=CLIENT)
        try:
            response = self.api.handle(request)
        except BareHttpStatus as exc:
            return Answer(exc.http_status, "bare")
        except OrthancError as exc:
            return Answer(exc.http_status, "error", exc.details.encode(), int(exc.code))
        return Answer(response.status, "body", response.body, None, response.content_type)

    def get(self, path: str, **query: str) -> Any:
        answer = self.call("GET", path, **query)
        assert (answer.status, answer.kind) == (200, "body"), answer
        return answer.json() if answer.content_type == "application/json" else answer.body

    def post(self, path: str, body: bytes | Any) -> Answer:
        return self.call("POST", path, body)


def peer_answer(peer: Any, method: str, path: str, body: bytes | Any = b"", headers: dict[str, str] | None = None,
                **query: str) -> Answer:
    """The same ``Answer`` from the real Orthanc (error JSON → ``error``, empty non-200 → ``bare``)."""
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    response = peer.client.request(method, path, content=body, params=query, headers=headers or {})
    if response.status_code != 200:
        if not response.content:
            return Answer(response.status_code, "bare")
        return Answer(response.status_code, "error", response.content, json.loads(response.content)["OrthancStatus"])
    return Answer(200, "body", response.content, None, response.headers.get("content-type", "").split(";")[0])


# Comparing files.
def file_tags(data: bytes) -> dict[str, Any]:
    """The dataset and the file meta information of a file, as Orthanc's full ``/tags``."""
    parsed = parse_dicom(data)
    tags = dataset_to_json(parsed.elements, JsonFormat.FULL)
    tags.update({f"{tag >> 16:04x},{tag & 0xFFFF:04x}": {"Meta": value.rstrip(b"\x00 ").decode("latin-1")}
                 for tag, value in parsed.meta.items() if tag not in (0x00020000, 0x00020001)})
    return tags


def leaves(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        if "Meta" in node:
            yield path, node["Meta"]
            return
        if {"Name", "Type", "Value"} <= set(node):
            value = node["Value"]
            if node["Type"] == "Sequence":
                yield path + "/items", len(value or [])
                for index, item in enumerate(value or []):
                    yield from leaves(item, f"{path}[{index}]")
            else:
                yield path, value
            return
        for key, value in node.items():
            yield from leaves(value, f"{path}/{key}")


def differences(ours: bytes, theirs: bytes, *, ignore: set[str] = frozenset()) -> list[tuple]:
    """The leaves that differ, but for generated identifiers that correspond one to one (the same
    original value mapped to the same new value on each side) and the ``ignore``d top-level tags."""
    a, b = dict(leaves(file_tags(ours))), dict(leaves(file_tags(theirs)))
    problems: list[tuple] = []
    forward: dict[str, str] = {}
    backward: dict[str, str] = {}
    for key in sorted(set(a) | set(b)):
        if key.lstrip("/").split("/")[0].split("[")[0] in ignore | SOFTWARE_TAGS:
            continue
        x, y = a.get(key, "<absent>"), b.get(key, "<absent>")
        if x == y:
            continue
        if _GROUP_LENGTH.match(key) and "<absent>" not in (x, y):
            continue  # present on both sides; the value depends on the length of the generated UIDs
        if isinstance(x, str) and isinstance(y, str) and GENERATED.match(x) and GENERATED.match(y):
            if forward.setdefault(x, y) != y or backward.setdefault(y, x) != x:
                problems.append((key, "inconsistent mapping", x, y))
            continue
        problems.append((key, x, y))
    return problems


# A file with (nearly) every public tag, to probe a whole profile at once.
def _value(vr: str, tag: int) -> Any:
    return {
        "AE": "AET", "AS": "030Y", "CS": "CSV", "DA": "20200102", "DS": "1.5", "DT": "20200102120000",
        "IS": "7", "LO": f"lo{tag:08x}", "LT": f"lt{tag:08x}", "PN": f"Pn^{tag:08x}", "SH": f"sh{tag & 0xFFFF:04x}",
        "ST": f"st{tag:08x}", "TM": "120000", "UC": f"uc{tag:08x}", "UI": f"1.2.3.{tag}", "UR": "http://x/y",
        "UT": f"ut{tag:08x}", "US": 3, "SS": -3, "UL": 5, "SL": -5, "FL": 1.25, "FD": 2.5, "AT": 0x00100010,
        "OB": b"\x01\x02", "OW": b"\x01\x02", "OF": b"\x00\x00\x80\x3f", "OD": b"\x00" * 8, "OL": b"\x00" * 4,
        "OV": b"\x00" * 8, "UN": b"\x01\x02", "SV": -9, "UV": 9,
    }[vr]


def rich_item(depth: int = 0) -> Dataset:
    """An item with one tag of each rule: kept, removed, cleared, identifiers, private."""
    item = Dataset()
    item.add_new(0x00080100, "SH", "C1")            # CodeValue: kept
    item.add_new(0x00080080, "LO", "InstInItem")    # InstitutionName: removed
    item.add_new(0x00080020, "DA", "20200101")      # StudyDate: cleared
    item.add_new(0x00081155, "UI", "1.2.3.4.1155")  # ReferencedSOPInstanceUID: new identifier
    item.add_new(0x0020000D, "UI", "1.2.3.4.13")
    item.add_new(0x0020000E, "UI", "1.2.3.4.14")
    item.add_new(0x00080018, "UI", "1.2.3.4.18")
    item.add_new(0x00100020, "LO", "PIDINITEM")
    item.add_new(0x00100010, "PN", "Name^InItem")
    item.add_new(0x00200052, "UI", "1.2.3.4.52")    # FrameOfReferenceUID, also at the first level
    item.add_new(0x00090010, "LO", "PRIVCREATOR")
    item.add_new(0x00091001, "LO", "private in item")
    item.add_new(0x00101010, "AS", "040Y")          # PatientAge: removed
    item.add_new(0x00101030, "DS", "70")            # PatientWeight: removed
    item.add_new(0x00280010, "US", 5)               # Rows: kept
    if depth == 0:
        item.add_new(0x0040A730, "SQ", Sequence([rich_item(1)]))  # ContentSequence: cleared
        item.add_new(0x00081140, "SQ", Sequence([rich_item(1)]))  # ReferencedImageSequence
        item.add_new(0x00082218, "SQ", Sequence([rich_item(1)]))  # AnatomicRegionSequence
        item.add_new(0x00080082, "SQ", Sequence([rich_item(1)]))  # InstitutionCodeSequence: removed
    return item


RICH_SEQUENCES = {0x00081140, 0x00082112, 0x00082218, 0x0040A730, 0x00081110, 0x00081250, 0x00400275, 0x00080082}
_SKIPPED_GROUPS = {0x0000, 0x0002, 0x0004, 0x7FE0, 0xFFFE}
_SKIPPED_TAGS = {0x00080005, 0x00280010, 0x00280011, 0x00280100, 0x00280101, 0x00280102, 0x00280103, 0x00280002,
                 0x00280004}


def every_tag_file(patient_id: str = "SINKPID") -> bytes:
    ds = Dataset()
    for tag, entry in sorted(DicomDictionary.items()):
        vr = entry[0].split(" or ")[0]
        if tag >> 16 in _SKIPPED_GROUPS or tag in _SKIPPED_TAGS or tag & 0xFFFF == 0:
            continue
        if vr == "SQ":
            item = rich_item() if tag in RICH_SEQUENCES else Dataset()
            if tag not in RICH_SEQUENCES:
                item.add_new(0x00080100, "SH", "C")
            ds.add_new(tag, "SQ", Sequence([item]))
        elif vr not in ("", "NONE"):
            ds.add_new(tag, vr, _value(vr, tag))
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.102"
    ds.StudyInstanceUID = "1.2.3.100"
    ds.SeriesInstanceUID = "1.2.3.101"
    ds.PatientID = patient_id
    ds.PatientName = "Sink^Patient"
    ds.FrameOfReferenceUID = "1.2.3.4.52"
    ds.add_new(0x00090010, "LO", "PRIVCREATOR")
    ds.add_new(0x00091001, "LO", "private top")
    ds.add_new(0x00431028, "OB", b"\x00\x01")
    ds.add_new(0x60000010, "US", 4)                 # overlays and curves: Orthanc 1.10 keeps them
    ds.add_new(0x60003000, "OW", b"\x00" * 4)
    ds.add_new(0x60004000, "LT", "overlay comments")
    ds.add_new(0x50000005, "US", 1)
    ds.add_new(0xFFFAFFFA, "SQ", Sequence([Dataset()]))
    ds.add_new(0xFFFCFFFC, "OB", b"\x00" * 4)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buffer = BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
