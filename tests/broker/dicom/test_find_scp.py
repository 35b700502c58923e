"""The C-FIND SCP with real clients (DCMTK's findscu, pynetdicom), compared with a real Orthanc 1.10
loaded with the same files: the same matches, the same tags returned."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from broker.dicom.sockets import NODELAY_HANDLERS, pause_reactor
from tests.support.dicom_samples import encode, minimal, sample_file
from tests.support.factory import make_instances
from tests.support.orthanc_peer import ORTHANC_BINARY, OrthancPeer

needs_dcmtk = pytest.mark.skipif(shutil.which("findscu") is None, reason="DCMTK is not installed")
needs_orthanc = pytest.mark.skipif(ORTHANC_BINARY is None, reason="Orthanc is not installed")
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
RETRIEVE_AE_TITLE = "(0008,0054)"

STUDY_1, STUDY_2, STUDY_3 = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2", "1.2.826.0.1.3680043.8.498.3"
SERIES_1A, SERIES_1B = "1.2.826.0.1.3680043.8.498.11", "1.2.826.0.1.3680043.8.498.12"

SEED_FILTER = """
function IncomingFindRequestFilter(query, origin)
-- First display the content of the C-Find query
PrintRecursive(query)
PrintRecursive(origin)

-- Remove the "PrivateCreator" tag from the query
local v = query
v['5555,0010'] = nil

return v
end
"""


def corpus() -> list[bytes]:
    """Three patients of our own (two series in one study, names in both cases, dates on both sides
    of 2000) and three of pydicom's files (with Rows, a non-main tag)."""
    def instance(study: str, series: str, number: int, **attributes: object) -> bytes:
        ds = minimal(**attributes)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study, series, number
        ds.SOPInstanceUID = f"{series}.{number}"
        return encode(ds)

    john = {"patient_id": "P1", "PatientName": "Doe^John", "StudyDate": "20200115", "StudyTime": "101500",
            "AccessionNumber": "ACC1", "StudyDescription": "Chest"}
    return [
        instance(STUDY_1, SERIES_1A, 1, Modality="CT", SeriesDescription="Axial", **john),
        instance(STUDY_1, SERIES_1A, 2, Modality="CT", SeriesDescription="Axial", **john),
        instance(STUDY_1, SERIES_1B, 1, Modality="MR", SeriesDescription="Sagittal", **john),
        instance(STUDY_2, STUDY_2 + ".1", 1, patient_id="P2", PatientName="DOE^JANE", StudyDate="20210310",
                 AccessionNumber="ACC22", Modality="CT"),
        instance(STUDY_3, STUDY_3 + ".1", 1, patient_id="P3", PatientName="Smith^Anna", StudyDate="19991231",
                 Modality="OT"),
        instance(STUDY_3 + ".9", STUDY_3 + ".9.1", 1, patient_id="P4", PatientName="Müller^Jörg",
                 SpecificCharacterSet="ISO_IR 100", StudyDate="20220202", Modality="OT"),
        *(sample_file(name) for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")),
    ]


@dataclass
class Find:
    """What findscu printed: the answers (tag → (VR, value)) and the final status."""

    answers: list[dict[str, tuple[str, str]]] = field(default_factory=list)
    status: str = ""

    def values(self, tag: str) -> list[str]:
        """The values of ``tag`` in the answers, sorted, without their padding."""
        return sorted(answer[tag][1].rstrip(" \x00") for answer in self.answers if tag in answer)

    def comparable(self) -> list[str]:
        """The answers in a stable order, without the AET that differs by server."""
        return sorted(repr(sorted((tag, value) for tag, value in answer.items() if tag != RETRIEVE_AE_TITLE))
                      for answer in self.answers)


_ELEMENT = re.compile(r"^I: (\s*\([0-9a-f]{4},[0-9a-f]{4}\)) (\w\w) (.*?)\s+#")


def findscu(port: int, called: str, keys: list[str], *, model: str = "-S", calling: str = "FINDSCU") -> Find:
    args = ["findscu", "-v", model, "-aet", calling, "-aec", called, "127.0.0.1", str(port)]
    run = subprocess.run(args + [arg for key in keys for arg in ("-k", key)], capture_output=True, text=True,
                         errors="replace", timeout=120, env=DCMTK_ENV)
    found = Find()
    current: dict[str, tuple[str, str]] | None = None
    for line in run.stderr.splitlines():
        if "Find Response:" in line and "(Pending)" in line:
            current = {}
            found.answers.append(current)
        elif "Final Find Response" in line:
            found.status = line.split("(", 1)[1].rstrip(")")
            current = None
        elif current is not None and (match := _ELEMENT.match(line)):
            value = match.group(3)  # "[text]", "(no value available)", or a number
            text = "" if value.startswith("(no value") else value[1:-1] if value.startswith("[") else value
            key = match.group(1)
            if key.startswith(" "):  # inside a sequence: numbered, items can repeat a tag
                key = f"{key.strip()} #{len(current)}"
            current[key] = (match.group(2), text)
    return found


@pytest.fixture(scope="module")
def orthanc() -> Iterator[OrthancPeer]:
    if ORTHANC_BINARY is None:
        pytest.skip("Orthanc is not installed")
    peer = OrthancPeer.create(DicomAlwaysAllowFind=True).start()
    try:
        for data in corpus():
            peer.upload(data)
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def loaded(luabroker):
    """A luabroker with the corpus; ``luabroker`` options as keyword arguments."""
    def start(**options):
        server = luabroker(**{"DicomAlwaysAllowFind": True, **options})
        for data in corpus():
            assert server.http.post("/instances", content=data).status_code == 200
        return server
    return start


#: (information model, keys): each level, wildcards, ranges, lists of UIDs, counters, non-main tags.
QUERIES = [
    ("-P", ["QueryRetrieveLevel=PATIENT", "PatientName", "PatientID", "PatientBirthDate",
            "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances"]),
    ("-P", ["QueryRetrieveLevel=PATIENT", "PatientName=doe*", "PatientID"]),
    ("-P", ["QueryRetrieveLevel=PATIENT", "PatientName=Smith^Ann?", "PatientID"]),
    ("-P", ["SpecificCharacterSet=ISO_IR 192", "QueryRetrieveLevel=PATIENT", "PatientName=MÜLLER*", "PatientID"]),
    ("-S", ["QueryRetrieveLevel=STUDY", "PatientName=DOE^JOHN", "StudyInstanceUID"]),
    ("-S", ["QueryRetrieveLevel=STUDY", "StudyDate=20000101-", "StudyTime", "AccessionNumber", "PatientName",
            "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "SOPClassesInStudy"]),
    ("-S", ["QueryRetrieveLevel=STUDY", "StudyDate=-19991231", "StudyDescription"]),
    ("-S", ["QueryRetrieveLevel=STUDY", "StudyDate=20200101-20201231", "StudyTime=100000-110000"]),
    ("-S", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={STUDY_1}\\{STUDY_3}", "PatientID"]),
    ("-S", ["QueryRetrieveLevel=STUDY", "ModalitiesInStudy=MR\\RTPLAN", "StudyInstanceUID"]),
    ("-S", ["QueryRetrieveLevel=STUDY", "AccessionNumber=ACC*", "SeriesDescription", "SpecificCharacterSet"]),
    ("-S", ["QueryRetrieveLevel=STUDY", "AccessionNumber=acc1\\ACC22", "StudyInstanceUID"]),  # case-sensitive
    ("-S", ["QueryRetrieveLevel=SERIES", "Modality=C?", "SeriesDescription", "SeriesInstanceUID",
            "NumberOfSeriesRelatedInstances", "StudyDate"]),
    ("-S", ["QueryRetrieveLevel=SERIES", f"StudyInstanceUID={STUDY_1}", f"SeriesInstanceUID={SERIES_1A}\\{SERIES_1B}",
            "Modality"]),
    ("-S", ["QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={STUDY_1}", "SOPInstanceUID", "InstanceNumber",
            "PatientName"]),
    ("-S", ["QueryRetrieveLevel=IMAGE", "SOPInstanceUID", "Rows", "Columns", "Modality"]),
    ("-S", ["QueryRetrieveLevel=IMAGE", "Rows=64", "SOPInstanceUID"]),
    ("-S", ["QueryRetrieveLevel=SERIES", "OtherPatientIDsSequence", "Modality"]),
    ("-S", ["QueryRetrieveLevel=SERIES", "SeriesDate=2004*", "SeriesInstanceUID"]),  # not on a date: 0xC000
    ("-S", ["QueryRetrieveLevel=STUDY", "StudyDate=2004*\\20200115", "StudyInstanceUID"]),  # in a list: literal
]


@needs_dcmtk
@needs_orthanc
def test_findscu_gets_the_answers_of_orthanc(loaded, orthanc):
    server = loaded()
    for model, keys in QUERIES:
        ours = findscu(server.dicom_port, server.aet, keys, model=model)
        theirs = findscu(orthanc.dicom_port, orthanc.aet, keys, model=model)
        assert ours.status == theirs.status, keys
        assert ours.comparable() == theirs.comparable(), keys
        assert ours.answers or ours.status != "Success", keys
        assert ours.values(RETRIEVE_AE_TITLE) == [server.aet] * len(ours.answers)


@needs_dcmtk
@needs_orthanc
@pytest.mark.parametrize("encoding", ["Utf8", "Latin1", "Ascii"])
def test_answers_are_in_the_default_encoding_as_orthanc(loaded, orthanc, encoding):
    server = loaded()
    keys = ["QueryRetrieveLevel=PATIENT", "PatientID=P4", "PatientName", "SpecificCharacterSet"]
    try:
        for client in (server.http, orthanc.client):
            assert client.put("/tools/default-encoding", content=encoding).status_code == 200
        ours = findscu(server.dicom_port, server.aet, keys, model="-P")
        assert ours.comparable() == findscu(orthanc.dicom_port, orthanc.aet, keys, model="-P").comparable()
        assert len(ours.answers) == 1
    finally:
        orthanc.client.put("/tools/default-encoding", content="Latin1")


@needs_dcmtk
def test_findscu_matches_at_each_level(loaded):
    server = loaded()
    port, aet = server.dicom_port, server.aet
    assert findscu(port, aet, ["QueryRetrieveLevel=PATIENT", "PatientName=doe*", "PatientID"],
                   model="-P").values("(0010,0020)") == ["P1", "P2"]
    studies = findscu(port, aet, ["QueryRetrieveLevel=STUDY", "StudyDate=20000101-20201231", "ModalitiesInStudy",
                                  "NumberOfStudyRelatedInstances"])
    assert [answer["(0008,0061)"][1].strip() for answer in studies.answers if answer["(0020,1208)"][1] == "3 "] \
        == ["CT\\MR"]
    assert findscu(port, aet, ["QueryRetrieveLevel=SERIES", f"SeriesInstanceUID={SERIES_1A}\\{SERIES_1B}",
                               "Modality"]).values("(0008,0060)") == ["CT", "MR"]
    assert findscu(port, aet, ["QueryRetrieveLevel=IMAGE", "Rows=128", "SOPInstanceUID"]).values("(0008,0018)") \
        == ["1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"]


@needs_dcmtk
def test_person_names_are_case_sensitive_with_case_sensitive_pn(loaded):
    server = loaded(CaseSensitivePN=True)
    keys = ["QueryRetrieveLevel=PATIENT", "PatientID"]
    assert findscu(server.dicom_port, server.aet, [*keys, "PatientName=doe*"], model="-P").answers == []
    assert findscu(server.dicom_port, server.aet, [*keys, "PatientName=Doe*"], model="-P").values("(0010,0020)") \
        == ["P1"]


@needs_dcmtk
def test_missing_or_unknown_level_fails_with_unable_to_process(loaded):
    server = loaded()
    assert findscu(server.dicom_port, server.aet, ["PatientName"]).status == "Failed: UnableToProcess"
    assert findscu(server.dicom_port, server.aet, ["QueryRetrieveLevel=FRAME"]).status == "Failed: UnableToProcess"
    assert findscu(server.dicom_port, server.aet, ["QueryRetrieveLevel=image", "PatientID=P2"]).status == "Success"


@needs_dcmtk
def test_limit_find_results_answers_the_first_ones_then_cancel(loaded):
    server = loaded(LimitFindResults=2, LimitFindInstances=3)
    studies = findscu(server.dicom_port, server.aet, ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"])
    assert (len(studies.answers), studies.status) == (2, "Cancel: MatchingTerminatedDueToCancelRequest")
    instances = findscu(server.dicom_port, server.aet, ["QueryRetrieveLevel=IMAGE", "SOPInstanceUID"])
    assert (len(instances.answers), instances.status) == (3, "Cancel: MatchingTerminatedDueToCancelRequest")
    exact = findscu(server.dicom_port, server.aet, ["QueryRetrieveLevel=STUDY", "PatientID=P1"])
    assert (len(exact.answers), exact.status) == (1, "Success")


@needs_dcmtk
def test_unknown_calling_aet_is_refused_unless_a_modality_allows_it(luabroker):
    modalities = {"finder": ["FINDSCU", "127.0.0.1", 104],
                  "nofind": {"AET": "NOFIND", "Host": "127.0.0.1", "Port": 104, "AllowFind": False}}
    server = luabroker(DicomModalities=modalities)
    keys = ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"]
    assert findscu(server.dicom_port, server.aet, keys, calling="FINDSCU").status == "Success"
    assert findscu(server.dicom_port, server.aet, keys, calling="STRANGER").status == ""  # aborted
    assert findscu(server.dicom_port, server.aet, keys, calling="NOFIND").status == ""


@needs_dcmtk
@needs_orthanc
def test_seed_find_filter_removes_the_private_creator_as_in_orthanc(loaded):
    peer = OrthancPeer.create(DicomAlwaysAllowFind=True)
    script = peer.workdir / "filter.lua"
    script.write_text(SEED_FILTER)
    peer.extra_config["LuaScripts"] = [str(script)]
    peer.start()
    try:
        for data in corpus():
            peer.upload(data)
        server = loaded(scripts={"filter.lua": SEED_FILTER})
        keys = ["QueryRetrieveLevel=PATIENT", "PatientID=P1", "5555,0010=ACME", "PatientName"]
        ours = findscu(server.dicom_port, server.aet, keys, model="-P")
        theirs = findscu(peer.dicom_port, peer.aet, keys, model="-P")
        assert ours.values("(0010,0010)") == ["Doe^John"]
        assert ours.comparable() == theirs.comparable()
    finally:
        peer.stop()
    unfiltered = loaded()
    assert findscu(unfiltered.dicom_port, unfiltered.aet, keys, model="-P").answers == []


FAILING_FILTERS = {
    "error": "function IncomingFindRequestFilter(query, origin) error('no') end",
    "loop": "function IncomingFindRequestFilter(query, origin) while true do end end",
    "nil": "function IncomingFindRequestFilter(query, origin) return nil end",
    "string": "function IncomingFindRequestFilter(query, origin) return 'STUDY' end",
    "empty table": "function IncomingFindRequestFilter(query, origin) return {} end",  # no QueryRetrieveLevel
    "boolean value": "function IncomingFindRequestFilter(query, origin) query['0010,0020'] = true return query end",
    "table value": "function IncomingFindRequestFilter(query, origin) query['0010,0020'] = {} return query end",
    "unknown name": "function IncomingFindRequestFilter(query, origin) query['NoSuchTag'] = '' return query end",
}


@needs_dcmtk
@pytest.mark.parametrize("source", FAILING_FILTERS.values(), ids=FAILING_FILTERS.keys())
def test_failing_find_filter_answers_unable_to_process_and_storing_goes_on(luabroker, source):
    server = luabroker(scripts={"filter.lua": source}, DicomAlwaysAllowFind=True)
    found = findscu(server.dicom_port, server.aet, ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"])
    assert found.status == "Failed: UnableToProcess"
    assert server.c_store(make_instances(1, patient_id="AFTER")) == [0x0000]
    assert findscu(server.dicom_port, server.aet, ["QueryRetrieveLevel=STUDY"]).status == "Failed: UnableToProcess"


@needs_dcmtk
def test_find_filter_replaces_the_query_and_sees_the_origin(luabroker):
    script = """
function IncomingFindRequestFilter(query, origin)
  assert(origin.RemoteAet == 'FINDSCU' and origin.CalledAet == 'LUABROKER' and origin.RemoteIp == '127.0.0.1')
  assert(origin.Manufacturer == 'GE' and query['0008,0052'] == 'STUDY' and query['0010,0020'] == '')
  return { QueryRetrieveLevel = 'SERIES', ['0010-0020'] = 'P2', ['00080060'] = '' }
end
"""
    server = luabroker(scripts={"filter.lua": script},
                       DicomModalities={"scu": ["FINDSCU", "127.0.0.1", 104, "GE"]})
    assert server.c_store([*make_instances(1, patient_id="P1"), *make_instances(1, patient_id="P2", modality="MR")]) \
        == [0x0000, 0x0000]
    found = findscu(server.dicom_port, server.aet, ["QueryRetrieveLevel=STUDY", "PatientID"])
    assert found.status == "Success"
    assert [sorted(answer) for answer in found.answers] == [["(0008,0005)", "(0008,0052)", "(0008,0054)",
                                                             "(0008,0060)", "(0010,0020)"]]
    assert found.values("(0008,0060)") == ["MR"]


def pynetdicom_find(port: int, aet: str, model: str, query: Dataset) -> Iterator[tuple[int, Dataset | None]]:
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", port, ae_title=aet, evt_handlers=NODELAY_HANDLERS)
    assert assoc.is_established
    try:
        pause_reactor(assoc)
        for status, identifier in assoc.send_c_find(query, model):
            yield status.Status, identifier
    finally:
        assoc.release()


def test_pynetdicom_patient_root_query(loaded):
    server = loaded()
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.PatientID = "P1"
    query.StudyInstanceUID = STUDY_1
    query.SeriesInstanceUID = ""
    query.NumberOfSeriesRelatedInstances = ""
    answers = list(pynetdicom_find(server.dicom_port, server.aet, PatientRootQueryRetrieveInformationModelFind,
                                   query))
    assert [status for status, _ in answers] == [0xFF00, 0xFF00, 0x0000]
    assert sorted((ds.SeriesInstanceUID, ds.NumberOfSeriesRelatedInstances) for _, ds in answers[:2]) \
        == [(SERIES_1A, 2), (SERIES_1B, 1)]
    assert answers[0][1].SpecificCharacterSet == "ISO_IR 100"
    assert StudyRootQueryRetrieveInformationModelFind in server.http.get("/tools/dicom-conformance").text


@needs_dcmtk
def test_a_find_filter_that_hangs_does_not_hold_c_store(luabroker):
    """The find filter runs in the main process: C-STORE, whose filters run in the filter process, is
    served while the filter loops, and the C-FIND then fails with 0xC000."""
    script = "function IncomingFindRequestFilter(query, origin) while true do end end\n" \
             "function ReceivedInstanceFilter(tags, origin, info) return true end"
    server = luabroker(scripts={"filter.lua": script}, DicomAlwaysAllowFind=True)
    args = ["findscu", "-v", "-S", "-aet", "FINDSCU", "-aec", server.aet, "127.0.0.1", str(server.dicom_port),
            "-k", "QueryRetrieveLevel=STUDY"]
    with subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=DCMTK_ENV) as find:
        assert server.c_store(make_instances(3, patient_id="DURING")) == [0x0000] * 3
        _, stderr = find.communicate(timeout=120)
    assert "Final Find Response (Failed: UnableToProcess)" in stderr
    assert len(server.http.get("/instances").json()) == 3
