"""The modification API used by REST and by the jobs engine (Lua ``ModifyInstance``), without Orthanc:
parsing, the run-time errors, ``modify_instance_bytes``, the store's extra metadata and counter."""
from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import ImplicitVRLittleEndian, RLELossless

from broker.core.dicom_file import CannotTranscode, is_known_transfer_syntax, read_dataset, transcode_dataset
from broker.core.levels import Level
from broker.core.metadata import MetadataType
from broker.core.modify import Modifier, modify_instance_bytes
from broker.core.modify_request import DicomPath, ModifyRequest
from broker.core.origin import Origin
from broker.core.store import Store
from broker.core.tags import parse_tag
from broker.errors import ErrorCode, OrthancError
from tests.support import dicom_samples as samples
from tests.support import factory

CT = samples.sample_file("CT_small.dcm")


def error_of(call) -> tuple[int, ErrorCode]:
    with pytest.raises(OrthancError) as caught:
        call()
    return caught.value.http_status, caught.value.code


def test_tags_and_paths() -> None:
    assert parse_tag("StationName") == parse_tag("0008,1010") == parse_tag("0008-1010") == parse_tag("00081010")
    assert error_of(lambda: parse_tag("stationname")) == (500, ErrorCode.UNKNOWN_DICOM_TAG)
    path = DicomPath.parse("ReferencedImageSequence[0].ReferencedSOPInstanceUID")
    assert path.prefix == ((0x00081140, 0),) and path.final == 0x00081155
    assert path.format() == "(0008,1140)[0].(0008,1155)"
    assert DicomPath.parse("0008,1140[*].StudyID").prefix == ((0x00081140, None),)
    assert error_of(lambda: DicomPath.parse("ReferencedImageSequence.CodeValue")) == \
        (400, ErrorCode.PARAMETER_OUT_OF_RANGE)
    kept = DicomPath.parse("ReferencedImageSequence")
    assert kept.matches([(0x00081140, 3)], 0x00080100)  # everything below a kept sequence
    assert not kept.matches([(0x00082112, 0)], 0x00080100)


def test_parsing_follows_orthanc() -> None:
    assert ModifyRequest.from_json({}).level is Level.INSTANCE
    assert ModifyRequest.from_json({"Replace": {"PatientID": "x"}, "Force": True}).level is Level.PATIENT
    assert ModifyRequest.from_json({"Replace": {"StudyInstanceUID": "1.2"}, "Force": True}).level is Level.STUDY
    assert ModifyRequest.from_json({}, Level.SERIES).level is Level.SERIES
    assert error_of(lambda: ModifyRequest.from_json({"Replace": {"PatientID": "x"}})) == (400, ErrorCode.BAD_REQUEST)
    assert error_of(lambda: ModifyRequest.from_json({"Replace": []})) == (400, ErrorCode.BAD_REQUEST)
    assert error_of(lambda: ModifyRequest.from_json({"Remove": "StationName"})) == (400, ErrorCode.BAD_REQUEST)
    assert error_of(lambda: ModifyRequest.from_json({"Force": 1})) == (400, ErrorCode.BAD_FILE_FORMAT)
    assert error_of(lambda: ModifyRequest.from_json([])) == (400, ErrorCode.BAD_FILE_FORMAT)
    # Remove, then Replace, then Keep: the later one wins.
    request = ModifyRequest.from_json({"Remove": ["StationName"], "Replace": {"StationName": "x"}})
    assert request.is_replaced(0x00081010) and not request.is_removed(0x00081010)
    request = ModifyRequest.from_json({"Replace": {"StationName": "x"}, "Keep": ["StationName"]})
    assert not request.is_replaced(0x00081010)


def test_lua_numbers_fail_when_applied_not_when_parsed() -> None:
    """keepStrings=false turns '12345' into 12345: accepted at submission, refused when run."""
    request = ModifyRequest.from_json({"Replace": {"StationName": 12345}, "Remove": [], "RemovePrivateTags": True})
    assert error_of(lambda: modify_instance_bytes(CT, request)) == (400, ErrorCode.BAD_PARAMETER_TYPE)


def test_modify_instance_bytes_and_the_sop_instance_uid() -> None:
    request = ModifyRequest.from_json({"Replace": {"StationName": "My Medical Device"}, "Remove": ["MilitaryRank"],
                                       "RemovePrivateTags": True})
    original = read_dataset(CT)
    modified = read_dataset(modify_instance_bytes(CT, request, new_sop_instance_uid=True))
    assert modified.StationName == "My Medical Device"
    assert not [element for element in modified if element.tag.is_private]
    assert modified.SOPInstanceUID != original.SOPInstanceUID
    assert modified.file_meta.MediaStorageSOPInstanceUID == modified.SOPInstanceUID
    assert (modified.StudyInstanceUID, modified.SeriesInstanceUID) == \
        (original.StudyInstanceUID, original.SeriesInstanceUID)
    same = read_dataset(modify_instance_bytes(CT, request, new_sop_instance_uid=False))
    assert same.SOPInstanceUID == original.SOPInstanceUID
    assert "SourceApplicationEntityTitle" not in same.file_meta  # a new file meta group, as DCMTK writes it


def test_one_modifier_maps_uids_consistently() -> None:
    files = [factory.to_bytes(ds) for ds in factory.make_instances(3, series=2)]
    modifier = Modifier(ModifyRequest.from_json({}, Level.STUDY))
    out = [read_dataset(modify_instance_bytes(data, modifier.request, modifier=modifier)) for data in files]
    before = [read_dataset(data) for data in files]
    assert len({ds.StudyInstanceUID for ds in out}) == 1 and out[0].StudyInstanceUID != before[0].StudyInstanceUID
    assert (out[0].SeriesInstanceUID == out[2].SeriesInstanceUID) == \
        (before[0].SeriesInstanceUID == before[2].SeriesInstanceUID)
    assert out[0].SeriesInstanceUID != out[1].SeriesInstanceUID
    assert len({ds.SOPInstanceUID for ds in out}) == 3


def test_transcoding() -> None:
    assert is_known_transfer_syntax("1.2.840.10008.1.2.4.50") and not is_known_transfer_syntax("1.2.3")
    implicit = read_dataset(modify_instance_bytes(CT, ModifyRequest.from_json({}), transcode=ImplicitVRLittleEndian))
    assert implicit.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert (implicit.pixel_array == read_dataset(CT).pixel_array).all()
    ds = read_dataset(CT)
    transcode_dataset(ds, RLELossless)
    assert ds.file_meta.TransferSyntaxUID == RLELossless
    with pytest.raises(CannotTranscode):
        transcode_dataset(read_dataset(CT), "1.2.840.10008.1.2.4.50")


def test_store_writes_the_extra_metadata_with_the_instance(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    try:
        result = store.store_instance(CT, Origin.lua(), metadata={MetadataType.MODIFIED_FROM: "original-id"},
                                      ancestor_metadata={Level.SERIES: {MetadataType.MODIFIED_FROM: "old-series"}})
        assert store.metadata(Level.INSTANCE, result.instance_id)["ModifiedFrom"] == "original-id"
        assert store.metadata(Level.INSTANCE, result.instance_id)["Origin"] == "Lua"
        assert store.metadata(Level.SERIES, result.parent_series)["ModifiedFrom"] == "old-series"
        assert "ModifiedFrom" not in store.metadata(Level.STUDY, result.parent_study)
        event = [e for e in store.outbox.pending() if e.kind == "StoredInstance"][-1]
        assert event.payload["metadata"]["ModifiedFrom"] == "original-id"
        assert [store.increment_global_sequence("AnonymizationSequence") for _ in range(2)] == [1, 2]
    finally:
        store.close()
    reopened = Store(tmp_path / "store")
    try:
        assert reopened.increment_global_sequence("AnonymizationSequence") == 3
    finally:
        reopened.close()
