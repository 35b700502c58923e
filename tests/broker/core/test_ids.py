"""Resource ids: SHA-1 of the UIDs, formatted as Orthanc does, and equal to a real Orthanc's."""
from __future__ import annotations

import hashlib

import pytest

from broker.core.ids import ResourceIds, format_sha1
from broker.core.origin import Origin
from broker.core.store import IncomingInstance
from tests.support import dicom_samples as samples


def test_id_is_sha1_in_five_dash_separated_groups() -> None:
    digest = hashlib.sha1(b"1CT1").hexdigest()
    assert format_sha1("1CT1") == "-".join(digest[i:i + 8] for i in range(0, 40, 8))
    assert format_sha1("1CT1") == "fa558bce-587a86d3-ad0da9b3-9d043d9d-4f5c5718"


def test_each_level_hashes_the_uids_of_its_ancestors() -> None:
    ids = ResourceIds.from_uids("P", "ST", "SE", "I")
    assert ids.chain() == (format_sha1("P"), format_sha1("P|ST"), format_sha1("P|ST|SE"), format_sha1("P|ST|SE|I"))


def test_missing_patient_id_hashes_as_empty_string() -> None:
    incoming = IncomingInstance(samples.encode(samples.minimal(patient_id=None)), Origin.lua())
    assert incoming.ids.patient == format_sha1("") == "da39a3ee-5e6b4b0d-3255bfef-95601890-afd80709"


def test_trailing_padding_is_not_hashed_but_leading_spaces_are() -> None:
    incoming = IncomingInstance(samples.kitchen_sink(), Origin.lua())
    assert incoming.ids.patient == format_sha1("  SPACED ID")


ID_FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "ExplVR_BigEndNoMeta.dcm", "rtdose_rle.dcm",
            "J2K_pixelrep_mismatch.dcm", "image_dfl.dcm", "MR_small_implicit.dcm"]


@pytest.mark.parametrize("name", ID_FILES)
def test_ids_equal_orthancs(orthanc_peer, name: str) -> None:
    data = samples.sample_file(name)
    answer = orthanc_peer.upload(data)
    ids = IncomingInstance(data, Origin.lua()).ids
    assert (ids.instance, ids.series, ids.study, ids.patient) == (
        answer["ID"], answer["ParentSeries"], answer["ParentStudy"], answer["ParentPatient"])


def test_ids_equal_orthancs_for_generated_edge_cases(orthanc_peer) -> None:
    for data in [samples.kitchen_sink(), samples.utf8_long_main_tags(),
                 samples.encode(samples.minimal(patient_id="")), samples.implicit(samples.minimal(patient_id=None))]:
        answer = orthanc_peer.upload(data)
        assert IncomingInstance(data, Origin.lua()).ids.instance == answer["ID"]
