"""The REST API of the worklists (Orthanc's worklists plugin, 1.12.10): create, list, read, replace
and delete, on a real server whose C-FIND SCP then answers from the files the API wrote."""
from __future__ import annotations

from pathlib import Path

import pytest
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from tests.broker.dicom.test_find_scp import pynetdicom_find
from tests.support.worklist_samples import query, worklist, write_worklist

TAGS = {
    "PatientID": "PID-45",
    "PatientName": "Müller^Jörg",
    "AccessionNumber": "ACC-45",
    "ScheduledProcedureStepSequence": [{
        "Modality": "MR",
        "ScheduledStationAETitle": "MR1",
        "ScheduledProcedureStepStartDate": "20250115",
    }],
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "worklists"
    path.mkdir()
    return path


@pytest.fixture
def server(luabroker, folder):
    return luabroker(Worklists={"Enable": True, "Database": str(folder)}, DicomAlwaysAllowFindWorklist=True)


def test_create_list_read_replace_delete(server, folder):
    created = server.http.post("/worklists/create", json={"Tags": TAGS})
    assert created.status_code == 200
    worklist_id = created.json()["ID"]
    assert created.json() == {"ID": worklist_id, "Path": f"/worklists/{worklist_id}"}
    assert [path.name for path in folder.iterdir()] == [f"{worklist_id}.wl"]  # no temporary file left

    listed = server.http.get("/worklists").json()
    assert [entry["ID"] for entry in listed] == [worklist_id]
    tags = listed[0]["Tags"]
    assert (tags["PatientID"], tags["PatientName"], tags["SpecificCharacterSet"]) == ("PID-45", "Müller^Jörg",
                                                                                      "ISO_IR 192")
    assert tags["StudyInstanceUID"]  # SetStudyInstanceUidIfMissing
    assert tags["ScheduledProcedureStepSequence"][0]["Modality"] == "MR"
    short = server.http.get(f"/worklists/{worklist_id}", params={"format": "Short"}).json()
    assert short["ID"] == worklist_id and short["Tags"]["0010,0020"] == "PID-45"
    full = server.http.get(f"/worklists/{worklist_id}", params={"format": "Full"}).json()
    assert full["Tags"]["0010,0020"] == {"Name": "PatientID", "Type": "String", "Value": "PID-45"}

    answers = [ds for status, ds in pynetdicom_find(server.dicom_port, server.aet, ModalityWorklistInformationFind,
                                                    query(station_aet="MR1")) if status == 0xFF00]
    assert [(ds.PatientID, str(ds.PatientName)) for ds in answers] == [("PID-45", "Müller^Jörg")]

    replaced = server.http.put(f"/worklists/{worklist_id}", json={"Tags": {"PatientID": "PID-46"}})
    assert replaced.json() == {"ID": worklist_id, "Path": f"/worklists/{worklist_id}"}  # forced: no step needed
    assert server.http.get(f"/worklists/{worklist_id}").json()["Tags"]["PatientID"] == "PID-46"

    assert server.http.delete(f"/worklists/{worklist_id}").json() == {}
    assert list(folder.iterdir()) == []
    missing = server.http.get(f"/worklists/{worklist_id}")
    assert missing.status_code == 404 and missing.json()["OrthancError"] == "Unknown resource"
    assert server.http.delete(f"/worklists/{worklist_id}").status_code == 404


def test_files_written_by_others_are_listed_by_their_name(server, folder):
    write_worklist(folder, "from-ris.wl", worklist("P1", "Doe^John", "CT1"), part10=False)
    (folder / "readme.txt").write_text("not a worklist")
    assert [entry["ID"] for entry in server.http.get("/worklists").json()] == ["from-ris"]
    assert server.http.get("/worklists/from-ris").json()["Tags"]["PatientID"] == "P1"


BAD_BODIES = {
    "not JSON": (b"{", "A JSON payload was expected"),
    "no Tags": (b'{"PatientID": "x"}', "'Tags' field is missing or not a JSON object"),
    "Tags not an object": (b'{"Tags": []}', "'Tags' field is missing or not a JSON object"),
    "no step": (b'{"Tags": {"PatientID": "x"}}', "'Tags' is missing a 'ScheduledProcedureStepSequence'"),
    "no modality": (b'{"Tags": {"ScheduledProcedureStepSequence": [{"ScheduledProcedureStepStartDate": "20250101"}]}}',
                    "'ScheduledProcedureStepSequence' is missing a 'Modality'"),
    "no date": (b'{"Tags": {"ScheduledProcedureStepSequence": [{"Modality": "CT"}]}}',
                "'ScheduledProcedureStepSequence' is missing a 'ScheduledProcedureStepStartDate'"),
    "number": (b'{"Tags": {"PatientID": 12}, "Force": true}', ""),
}


@pytest.mark.parametrize(("body", "details"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_bodies_are_refused_with_orthanc_errors(server, folder, body, details):
    answer = server.http.post("/worklists/create", content=body)
    assert answer.status_code == 400
    assert answer.json()["Details"].startswith(details)
    assert list(folder.iterdir()) == []


def test_force_skips_the_checks(server, folder):
    answer = server.http.post("/worklists/create", json={"Tags": {"PatientID": "x"}, "Force": True})
    assert answer.status_code == 200
    assert server.http.get(answer.json()["Path"]).json()["Tags"]["PatientID"] == "x"


def test_ids_never_leave_the_folder(server, folder, tmp_path):
    """The path is routed as sent (%-escapes kept), so an escaped separator is part of a file name of the
    folder; ``..`` segments are resolved before routing; IDs with a separator are refused (core tests)."""
    secret = tmp_path / "secret.wl"
    secret.write_bytes(b"keep me")
    for path in ("/worklists/..%2Fsecret", "/worklists/..%5Csecret", "/worklists/../secret"):
        assert server.http.get(path).status_code in (400, 404), path
        server.http.put(path, json={"Tags": TAGS})
        assert server.http.delete(path).status_code in (200, 400, 404), path
    assert secret.read_bytes() == b"keep me"
    assert list(folder.iterdir()) == []


def test_bad_format_is_refused(server):
    answer = server.http.get("/worklists", params={"format": "Human"})
    assert answer.status_code == 400 and answer.json()["OrthancError"] == "Parameter out of range"
