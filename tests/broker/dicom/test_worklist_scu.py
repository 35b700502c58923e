"""The worklist C-FIND SCU, ``POST /modalities/{name}/find-worklist``: luabroker and a real Orthanc 1.10
query the same Orthanc worklist server (its sample plugin over the same files) and must answer the
same JSON, in each format and for bad requests."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.broker.dicom.test_worklist_scp import WORKLIST_PLUGIN, accented, two_stations
from tests.support.orthanc_peer import ORTHANC_BINARY, OrthancPeer

pytestmark = pytest.mark.skipif(ORTHANC_BINARY is None or not WORKLIST_PLUGIN.exists(),
                                reason="Orthanc and its sample worklist plugin are needed")

STEP = {"ScheduledStationAETitle": "", "ScheduledProcedureStepStartDate": "", "Modality": ""}

#: Bodies of find-worklist: queries in both forms, each format, sequences, and requests that fail.
BODIES: list[Any] = [
    {"PatientID": "", "PatientName": ""},
    {"PatientID": "", "PatientName": "", "ScheduledProcedureStepSequence": [STEP]},
    {"Query": {"PatientName": "Doe*", "AccessionNumber": "", "ScheduledProcedureStepSequence": [STEP]}},
    {"Query": {"PatientID": "P7814", "0040,0100": [{"0040,0001": ""}]}, "Short": True},
    {"Query": {"PatientID": "", "ScheduledProcedureStepSequence": [STEP]}, "Full": True},
    {"Query": {"PatientID": "", "PatientName": ""}, "Simplify": True, "Timeout": 20},
    {"Query": {"PatientID": "", "0040,0100": [{"0040,0001": "STATION_AET", "0040,0002": ""}]}},
    {"Query": {"PatientName": "", "SpecificCharacterSet": "ISO_IR 192"}},
    {"Query": {"PatientID": "", "ScheduledProcedureStepStartDate": "2024*"}},
    {"Query": {"NoSuchTag": ""}},
    {"Query": {"PatientID": 3}},
    {"Query": []},
    "not json",
]


@pytest.fixture
def worklist_server(tmp_path: Path) -> Any:
    folder = tmp_path / "worklists"
    folder.mkdir()
    two_stations(folder)
    accented(folder)
    orthanc = OrthancPeer.create(Plugins=[str(WORKLIST_PLUGIN)], Worklists={"Enable": True, "Database": str(folder)},
                                 DicomAlwaysAllowFindWorklist=True).start()
    assert orthanc.client is not None
    assert orthanc.client.put("/modalities/self", json=[orthanc.aet, "127.0.0.1", orthanc.dicom_port]).is_success
    try:
        yield orthanc
    finally:
        orthanc.stop()


def answer(http: Any, path: str, body: Any) -> tuple[int, Any]:
    sent = http.post(path, content=body) if isinstance(body, str) else http.post(path, json=body)
    if sent.status_code != 200:
        return sent.status_code, sent.json().get("OrthancStatus") if sent.content else None
    return 200, sorted(sent.json(), key=repr)


@pytest.mark.parametrize("body", BODIES, ids=[str(body)[:60] for body in BODIES])
def test_find_worklist_answers_as_orthanc(worklist_server: OrthancPeer, luabroker: Any, body: Any) -> None:
    server = luabroker(DicomModalities={"x": [worklist_server.aet, "127.0.0.1", worklist_server.dicom_port]})
    assert answer(server.http, "/modalities/x/find-worklist", body) == \
        answer(worklist_server.client, "/modalities/self/find-worklist", body)


def test_find_worklist_of_an_unknown_modality_as_orthanc(worklist_server: OrthancPeer, luabroker: Any) -> None:
    server = luabroker()
    body = {"Query": {"PatientID": ""}}
    assert answer(server.http, "/modalities/nope/find-worklist", body) == \
        answer(worklist_server.client, "/modalities/nope/find-worklist", body)


def test_a_body_that_is_no_object_is_a_bad_request(luabroker: Any) -> None:
    """Orthanc 1.10.1 fails with an internal error (500) on a JSON array; luabroker says what is wrong."""
    sent = luabroker().http.post("/modalities/x/find-worklist", json=[])
    assert (sent.status_code, sent.json()["OrthancStatus"]) == (400, 15)
