"""Orthanc's JSON views of a dataset: unit rules, then parity with a real Orthanc for many files."""
from __future__ import annotations

from typing import Any

import pytest

from broker.core.dicom_json import JsonFormat, dataset_to_json, simplify
from broker.core.dicom_parse import parse_dicom
from tests.support import dicom_samples as samples


def full(data: bytes) -> dict[str, Any]:
    return dataset_to_json(parse_dicom(data).elements, JsonFormat.FULL)


def human(data: bytes) -> dict[str, Any]:
    return dataset_to_json(parse_dicom(data).elements, JsonFormat.HUMAN)


@pytest.fixture(scope="module")
def sink_file() -> bytes:
    return samples.kitchen_sink()


@pytest.fixture(scope="module")
def sink(sink_file: bytes) -> dict[str, Any]:
    return full(sink_file)


def test_trailing_padding_is_removed_and_leading_spaces_kept(sink: dict[str, Any]) -> None:
    assert sink["0010,0020"]["Value"] == "  SPACED ID"
    assert sink["0008,103e"]["Value"] == "short"


def test_binary_numbers_are_printed_and_joined(sink: dict[str, Any]) -> None:
    assert sink["0018,1310"] == {"Name": "AcquisitionMatrix", "Type": "String", "Value": "0\\4\\4\\0"}
    assert sink["0018,9219"]["Value"] == "-5"
    assert sink["0018,6028"]["Value"] == "3.1415899999999999"
    assert sink["0018,9306"]["Value"] == "0.10000000149011612"  # FL printed at double precision
    assert sink["0020,9165"]["Value"] == "0010,0010"  # AT: first value only


def test_values_over_256_utf8_bytes_are_too_long(sink: dict[str, Any]) -> None:
    assert sink["0020,4000"]["Type"] == "String"  # 256 bytes exactly
    assert sink["0008,2111"] == {"Name": "DerivationDescription", "Type": "TooLong", "Value": None}
    assert human(samples.utf8_long_main_tags())["StudyDescription"] is None  # 200 characters, 400 bytes


def test_binary_values_are_null(sink: dict[str, Any]) -> None:
    assert sink["0011,1003"]["Type"] == "Null"
    assert sink["7fe0,0010"] == {"Name": "PixelData", "Type": "Null", "Value": None}


def test_private_tags_are_named_from_dcmtks_dictionary(sink: dict[str, Any]) -> None:
    assert sink["0009,0010"] == {"Name": "PrivateCreator", "Type": "String", "Value": "GEMS_IDEN_01"}
    assert sink["0009,1001"] == {"Name": "FullFidelity", "PrivateCreator": "GEMS_IDEN_01", "Type": "String",
                                 "Value": "full fidelity"}
    assert sink["0011,1001"]["Name"] == "Unknown Tag & Data"
    assert sink["0011,1001"]["PrivateCreator"] == "MY_CREATOR"
    assert "PrivateCreator" not in sink["0043,1028"]  # no creator for that block


def test_tags_after_pixel_data_are_left_out(sink: dict[str, Any]) -> None:
    assert "fffc,fffc" not in sink and "7fe1,0010" not in sink


def test_sequences_nest_and_empty_ones_stay(sink: dict[str, Any]) -> None:
    assert sink["0088,0200"] == {"Name": "IconImageSequence", "Type": "Sequence", "Value": []}
    items = sink["0008,1032"]["Value"]
    assert [item["0008,0100"]["Value"] for item in items] == ["113838", "2"]
    assert items[0]["0040,0260"]["Value"][0]["0011,1001"]["Value"] == "in-seq private"


def test_simplified_form_keys_by_name_and_last_duplicate_wins(sink: dict[str, Any], sink_file: bytes) -> None:
    simple = simplify(sink)
    assert simple == human(sink_file)
    assert simple["PatientName"] == "Müller^Jürgen"
    assert simple["Unknown Tag & Data"] is None  # (0043,1028), after the private strings
    assert simple["PrivateCreator"] == "MY_CREATOR"
    assert simple["ProcedureCodeSequence"][1] == {"CodeValue": "2"}


def test_short_form_keys_by_tag() -> None:
    short = dataset_to_json(parse_dicom(samples.kitchen_sink()).elements, JsonFormat.SHORT)
    assert short["0010,0010"] == "Müller^Jürgen"
    assert short["0008,2111"] is None


# Orthanc answers that differ on purpose (docs/rest-deviations.md).
KNOWN_DEVIATIONS = {
    # ISO 2022 IR 13: Orthanc decodes the whole value as JIS X 0201, where 0x5C (the value delimiter)
    # is the yen sign. We keep the delimiter.
    "J2K_pixelrep_mismatch.dcm": lambda value: value.replace("\u00a5", "\\") if isinstance(value, str) else value,
}


def _normalise(value: Any, fix: Any) -> Any:
    if isinstance(value, dict):
        return {key: _normalise(item, fix) for key, item in value.items()}
    if isinstance(value, list):
        return [_normalise(item, fix) for item in value]
    return fix(value)


PARITY_FILES = [name for name in samples.all_test_files()
                if name not in samples.UNREADABLE_FILES and name not in samples.FILES_WITHOUT_UIDS]
GENERATED = {"kitchen_sink": samples.kitchen_sink, "kitchen_sink_implicit": lambda: samples.kitchen_sink(
    "1.2.840.10008.1.2"), "utf8_long_main_tags": samples.utf8_long_main_tags}


@pytest.mark.parametrize("name", PARITY_FILES + sorted(GENERATED))
def test_tags_equal_orthancs(orthanc_peer, name: str) -> None:
    data = GENERATED[name]() if name in GENERATED else samples.sample_file(name)
    orthanc_peer.clear()
    instance = orthanc_peer.upload(data)["ID"]
    theirs_full = orthanc_peer.get(f"/instances/{instance}/tags")
    theirs_human = orthanc_peer.get(f"/instances/{instance}/simplified-tags")
    fix = KNOWN_DEVIATIONS.get(name)
    if fix is not None:
        theirs_full, theirs_human = _normalise(theirs_full, fix), _normalise(theirs_human, fix)
    assert full(data) == theirs_full
    assert human(data) == theirs_human
