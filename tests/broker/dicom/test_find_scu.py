"""The C-FIND SCU and ``/queries``: luabroker and a real Orthanc 1.10 query the same Orthanc (loaded with
the C-FIND SCP's corpus) and must answer the same REST views, ids aside; ``OutgoingFindRequestFilter``
seen by a pynetdicom SCP that records the queries; C-ECHO with ``CheckFind``."""
from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset

from tests.broker.dicom.test_find_scp import (  # noqa: F401 (orthanc: the fixture, Orthanc with the corpus)
    SERIES_1A,
    STUDY_1,
    corpus,
    orthanc,
)
from tests.support.orthanc_peer import OrthancPeer
from tests.support.ports import free_port
from tests.support.waiting import wait_until

#: The views of one query that must be equal, below its ``Path``.
VIEWS = ("/answers", "/answers?expand", "/answers?expand&simplify", "/answers?expand&short", "/query",
         "/query?simplify", "/query?short", "/level", "/modality")
CONTENT = ("/answers/{n}/content", "/answers/{n}/content?simplify", "/answers/{n}/content?short")


@pytest.fixture
def reference(request: pytest.FixtureRequest) -> OrthancPeer:
    """The C-FIND SCP tests' Orthanc with their corpus, with the modality ``x``: itself."""
    peer: OrthancPeer = request.getfixturevalue("orthanc")
    assert peer.client is not None
    assert peer.client.put("/modalities/x", json=[peer.aet, "127.0.0.1", peer.dicom_port]).is_success
    return peer


def views(http: httpx.Client, body: Any, path: str = "/modalities/x/query") -> dict[str, Any]:
    """Everything REST says about a query: its error, or each view of it and of its answers."""
    made = http.post(path, json=body)
    if made.status_code != 200:
        return {"status": made.status_code, "OrthancStatus": made.json().get("OrthancStatus")}
    created = made.json()
    assert sorted(created) == ["ID", "Path"] and created["Path"] == f"/queries/{created['ID']}"
    seen: dict[str, Any] = {}
    for view in VIEWS:
        answer = http.get(created["Path"] + view)
        seen[view] = answer.json() if answer.headers["content-type"].startswith("application/json") else answer.text
    for index in seen["/answers"]:
        for view in CONTENT:
            seen[view.format(n=index)] = http.get(created["Path"] + view.format(n=index)).json()
    return seen


QUERIES: list[dict[str, Any]] = [
    {"Level": "Patient"},
    {"Level": "Patient", "Query": {"PatientName": "doe*", "NumberOfPatientRelatedStudies": "",
                                   "NumberOfStudyRelatedSeries": ""}},
    {"Level": "Patient", "Query": {"PatientName": "M*", "PatientBirthDate": ""}},
    {"Level": "Patient", "Query": {"PatientName": "Müller*", "SpecificCharacterSet": " iso_ir 192"}},
    {"Level": "Patient", "Query": {"PatientName": "M*", "SpecificCharacterSet": "ISO_IR 999"}},
    {"Level": "Study", "Query": {"StudyDate": "20200101-", "ModalitiesInStudy": "", "NumberOfStudyRelatedSeries": "",
                                 "StudyDescription": ""}},
    {"Level": "Study", "Query": {"SeriesDescription": "NOPE", "PatientID": "P*"}},
    {"Level": "Study", "Query": {"SeriesDescription": "NOPE"}, "Normalize": False},
    {"Level": "Study", "Query": {"StudyInstanceUID": "*"}},
    {"Level": "series", "Query": {"Modality": "CT\\MR", "SeriesDescription": "", "0020,0011": ""}},
    {"Level": "Instance", "Query": {"Rows": "", "StudyInstanceUID": STUDY_1}, "Normalize": False},
    {"Level": "Instance", "Query": {"Rows": "512", "ImageComments": ""}, "Normalize": False},
    {"Level": "Instance", "Query": {"Rows": "*"}, "Normalize": False},
    {"Level": "Instance", "Query": {"Rows": "*"}},
    {"Level": "Image", "Query": {"SOPInstanceUID": "", "InstanceNumber": "1"}, "LocalAet": "SOMEONE", "Timeout": 20},
    {"Query": {}},
    {"Level": "Nope"},
    {"Level": "Study", "Query": {"NoSuchTag": "x"}},
    {"Level": "Study", "Query": {"PatientID": 12}},
    {"Level": "Study", "Normalize": "yes"},
    {"Level": "Study", "LocalAet": 1},
    [],
]


@pytest.mark.parametrize("body", QUERIES, ids=[str(q)[:60] for q in QUERIES])
def test_query_views_equal_orthancs(reference: OrthancPeer, luabroker: Any, body: Any) -> None:
    server = luabroker(DicomModalities={"x": [reference.aet, "127.0.0.1", reference.dicom_port]})
    assert reference.client is not None
    assert views(server.http, body) == views(reference.client, body)


def test_luabroker_querying_itself_answers_as_orthanc_querying_itself(reference: OrthancPeer, luabroker: Any) -> None:
    """Both directions at once: our SCU asking our SCP, as Orthanc's asking its own, on the same files
    (luabroker takes Orthanc's AET, which the answers carry as RetrieveAETitle)."""
    port = free_port()
    server = luabroker(DicomAet=reference.aet, DicomPort=port, DicomAlwaysAllowFind=True,
                       DicomModalities={"x": [reference.aet, "127.0.0.1", port]})
    for data in corpus():
        assert server.http.post("/instances", content=data).status_code == 200
    assert reference.client is not None
    for body in QUERIES:
        assert unordered(views(server.http, body)) == unordered(views(reference.client, body)), body


def unordered(seen: dict[str, Any]) -> dict[str, Any]:
    """The views of a query whatever the order of the answers (the SCPs' orders differ: cfind.md)."""
    return {view: sorted(value, key=json.dumps) if view.startswith("/answers?") else value
            for view, value in seen.items() if not view.startswith("/answers/")}


LEGACY: list[tuple[str, Any]] = [
    ("find-patient", {}),
    ("find-patient", {"PatientName": "doe*", "PatientBirthDate": ""}),
    ("find-patient", {"PatientID": 12}),
    ("find-patient", {"NoSuchTag": "1"}),
    ("find-patient", "not json"),
    ("find-patient", []),
    ("find-study", {}),
    ("find-study", {"PatientID": "*"}),
    ("find-study", {"PatientID": "P1"}),
    ("find-study", {"AccessionNumber": "ACC*", "ModalitiesInStudy": "CT", "StudyDescription": ""}),
    ("find-series", {"PatientID": "P1"}),
    ("find-series", {"PatientID": "P1", "StudyInstanceUID": STUDY_1, "Rows": "1"}),
    ("find-instance", {"PatientID": "P1", "StudyInstanceUID": STUDY_1}),
    ("find-instance", {"PatientID": "P1", "StudyInstanceUID": STUDY_1, "SeriesInstanceUID": SERIES_1A}),
    ("find", {}),
    ("find", {"PatientName": "doe*", "Modality": "CT"}),
]


@pytest.mark.parametrize(("route", "body"), LEGACY, ids=[f"{r} {b}"[:60] for r, b in LEGACY])
def test_legacy_find_routes_answer_as_orthanc(reference: OrthancPeer, luabroker: Any, route: str, body: Any) -> None:
    server = luabroker(DicomModalities={"x": [reference.aet, "127.0.0.1", reference.dicom_port]})
    assert reference.client is not None
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    ours, theirs = (http.post(f"/modalities/x/{route}", content=content) for http in (server.http, reference.client))
    assert ours.status_code == theirs.status_code
    if theirs.status_code == 200:
        assert ours.json() == theirs.json()
    elif theirs.content:
        assert ours.json()["OrthancStatus"] == theirs.json()["OrthancStatus"]
    else:
        assert ours.content == b""


def test_queries_below_an_answer_equal_orthancs(reference: OrthancPeer, luabroker: Any) -> None:
    server = luabroker(DicomModalities={"x": [reference.aet, "127.0.0.1", reference.dicom_port]})
    assert reference.client is not None
    for http in (server.http, reference.client):
        assert http.post("/modalities/x/query", json={"Level": "Patient", "Query": {"PatientID": "P1"}}).is_success
    patients = {http: http.post("/modalities/x/query", json={"Level": "Patient", "Query": {"PatientID": "P1"}}).json()
                for http in (server.http, reference.client)}
    studies = {http: http.post("/modalities/x/query", json={"Level": "Study", "Query": {"PatientID": "P1"}}).json()
               for http in (server.http, reference.client)}
    for child in ("query-studies", "query-series", "query-instances"):
        body = {"Query": {"NumberOfStudyRelatedSeries": "", "Modality": ""}}
        assert (views(server.http, body, f"{patients[server.http]['Path']}/answers/0/{child}")
                == views(reference.client, body, f"{patients[reference.client]['Path']}/answers/0/{child}"))
    for http, query in studies.items():  # a level that is not below the answer's, an answer that does not exist
        assert http.post(f"{query['Path']}/answers/0/query-studies", json={}).status_code == 404
        assert http.post(f"{query['Path']}/answers/9/query-series", json={}).status_code == 400
    ours, theirs = studies[server.http]["Path"], studies[reference.client]["Path"]
    for path in ("", "/answers/0"):  # what can follow: Orthanc's lists, in its order
        assert server.http.get(ours + path).json() == reference.client.get(theirs + path).json()
    listed = reference.client.get(patients[reference.client]["Path"] + "/answers/0").json()
    assert server.http.get(patients[server.http]["Path"] + "/answers/0").json() == \
        [name.replace("query-study", "query-studies") for name in listed]  # the route that exists
    assert server.http.delete(ours).status_code == 200
    assert ours.rsplit("/", 1)[1] not in server.http.get("/queries").json()
    gone = server.http.get(f"{ours}/answers")
    assert (gone.status_code, gone.json()["OrthancStatus"]) == (404, 17)


def test_query_retrieve_size_keeps_the_most_recently_used(luabroker: Any, recording_scp: Any) -> None:
    scp = recording_scp()
    server = luabroker(QueryRetrieveSize=2, DicomModalities={"scp": [scp.aet, "127.0.0.1", scp.port]})
    made = [server.http.post("/modalities/scp/query", json={"Level": "Study"}).json()["ID"] for _ in range(2)]
    assert server.http.get(f"/queries/{made[0]}/level").text == "Study"  # now the most recently used
    made.append(server.http.post("/modalities/scp/query", json={"Level": "Study"}).json()["ID"])
    assert server.http.get("/queries").json() == sorted([made[0], made[2]])


def test_what_the_peer_is_asked(luabroker: Any, recording_scp: Any) -> None:
    """Normalization, the identifiers added, the models, the calling AET, the answers kept."""
    scp = recording_scp()
    answer = Dataset()
    answer.PatientID, answer.PatientName, answer.Rows = "P9", "Smith", 12
    scp.find_answers = [answer]
    server = luabroker(DicomModalities={"scp": [scp.aet, "127.0.0.1", scp.port],
                                        "ge": {"AET": scp.aet, "Host": "127.0.0.1", "Port": scp.port,
                                               "Manufacturer": "GE", "LocalAet": "MINE"}})
    made = server.http.post("/modalities/scp/query", json={"Level": "Series", "Query": {"Rows": "", "Modality": "*"}})
    assert made.status_code == 200
    identifier, model, calling = scp.queries[-1]
    assert (model, calling) == ("1.2.840.10008.5.1.4.1.2.2.1", server.aet)  # Study Root
    assert {element.keyword: element.value for element in identifier} == {
        "SpecificCharacterSet": "ISO_IR 100", "QueryRetrieveLevel": "SERIES", "AccessionNumber": "",
        "Modality": "*", "PatientID": "", "StudyInstanceUID": "", "SeriesInstanceUID": ""}
    content = server.http.get(f"{made.json()['Path']}/answers/0/content?simplify").json()
    assert content == {"PatientID": "P9", "PatientName": "Smith", "QueryRetrieveLevel": "SERIES", "Rows": "12",
                       "SpecificCharacterSet": "ISO_IR 100"}

    assert server.http.post("/modalities/ge/query", json={"Level": "Patient", "LocalAet": "IGNORED"}).is_success
    identifier, model, calling = scp.queries[-1]
    assert (model, calling) == ("1.2.840.10008.5.1.4.1.2.1.1", "MINE")  # Patient Root, the modality's LocalAet
    assert identifier.PatientID == "*" and identifier.QueryRetrieveLevel == "PATIENT"

    asked = {"PatientName": "Jörg", "SpecificCharacterSet": "ISO 2022 IR 100"}  # Latin-1 by another name
    assert server.http.post("/modalities/scp/query", json={"Level": "Patient", "Query": asked}).is_success
    identifier = scp.queries[-1][0]
    assert identifier.SpecificCharacterSet == "ISO_IR 100"
    assert identifier.PatientName == "Jörg"  # decoded as Latin-1: UTF-8 bytes would read "JÃ¶rg"


def test_wildcards_for_the_manufacturers_that_refuse_them(luabroker: Any, recording_scp: Any) -> None:
    scp = recording_scp()
    def modality(manufacturer: str) -> list[Any]:
        return [scp.aet, "127.0.0.1", scp.port, manufacturer]
    server = luabroker(DicomModalities={"dates": modality("GenericNoWildcardInDates"),
                                        "all": modality("GenericNoUniversalWildcard")})
    query = {"StudyDate": "*", "StudyDescription": "*", "AccessionNumber": "A*"}
    for name, date, description in (("dates", "", "*"), ("all", "", "")):
        assert server.http.post(f"/modalities/{name}/query", json={"Level": "Study", "Query": query}).is_success
        identifier = scp.queries[-1][0]
        assert (identifier.StudyDate, identifier.StudyDescription or "", identifier.AccessionNumber) == \
            (date, description, "A*")
        assert server.http.post(f"/modalities/{name}/query", json={"Level": "Study", "Query": query,
                                                                   "Normalize": False}).is_success
        assert scp.queries[-1][0].StudyDate == "*"  # only the normalized queries are fixed


OUTGOING_FILTER = """
function OutgoingFindRequestFilter(query, remoteAet)
  PrintRecursive(query)
  for key, value in pairs(query) do
    if value == '*' then query[key] = '' end
  end
  query['0008,1030'] = remoteAet
  return query
end
"""


def test_outgoing_find_request_filter_is_seen_by_the_peer(luabroker: Any, recording_scp: Any) -> None:
    scp = recording_scp(aet="PEERAET")
    server = luabroker(scripts={"filter.lua": OUTGOING_FILTER},
                       DicomModalities={"scp": [scp.aet, "127.0.0.1", scp.port]})
    made = server.http.post("/modalities/scp/query", json={"Level": "Study", "Query": {"PatientName": "*",
                                                                                         "PatientID": "P*"}})
    assert made.status_code == 200
    identifier = scp.queries[-1][0]
    assert (identifier.PatientName, identifier.PatientID, identifier.StudyDescription) == ("", "P*", "PEERAET")
    # The query kept is the one asked.
    assert server.http.get(f"{made.json()['Path']}/query?short").json() == {"0010,0010": "*", "0010,0020": "P*"}
    # The legacy routes and the echo do not run it.
    assert server.http.post("/modalities/scp/echo", json={"CheckFind": True}).json() == {}
    assert "0008,1030" not in {f"{element.tag.group:04x},{element.tag.element:04x}" for element in scp.queries[-1][0]}
    assert server.http.post("/modalities/scp/find-patient", json={"PatientName": "*"}).json() == []
    assert scp.queries[-1][0].PatientName == "*"


ANSWERING_FILTER = """
function OutgoingFindRequestFilter(query, aet)
  local asked = query['0010,0020']
  if asked == 'ERR' then error('no') end
  if asked == 'STR' then return 'a string' end
  if asked == 'NIL' then return nil end
  if asked == 'TAB' then return { PatientID = {} } end
  if asked == 'BOOL' then return { PatientID = true } end
  if asked == 'NUM' then return { PatientID = 12 } end
  return query
end
"""


def test_what_the_filter_answers_as_orthanc(luabroker: Any, recording_scp: Any, tmp_path: Any) -> None:
    """An error, or an answer that is not a table of strings, fails the query as in Orthanc; a number is
    read as a string (keepStrings)."""
    scp = recording_scp()
    (tmp_path / "filter.lua").write_text(ANSWERING_FILTER)
    modalities = {"scp": [scp.aet, "127.0.0.1", scp.port]}
    peer = OrthancPeer.create(LuaScripts=[str(tmp_path / "filter.lua")], DicomModalities=modalities).start()
    try:
        server = luabroker(scripts={"filter.lua": ANSWERING_FILTER}, DicomModalities=modalities)
        for asked in ("ERR", "STR", "NIL", "TAB", "BOOL", "NUM"):
            seen = len(scp.queries)
            answers = [http.post("/modalities/scp/query", json={"Level": "Patient", "Query": {"PatientID": asked}})
                       for http in (server.http, peer.client)]
            ours, theirs = ((a.status_code, a.json().get("OrthancStatus")) for a in answers)
            assert ours == theirs, asked
            if asked == "NUM":
                assert ours == (200, None) and [q[0].PatientID for q in scp.queries[seen:]] == ["12", "12"]
            else:
                assert ours[0] == 500 and len(scp.queries) == seen
    finally:
        peer.stop()


def test_an_empty_table_from_the_filter_is_an_empty_query(luabroker: Any, recording_scp: Any) -> None:
    scp = recording_scp()
    server = luabroker(scripts={"filter.lua": "function OutgoingFindRequestFilter(q, aet) return {} end"},
                       DicomModalities={"scp": [scp.aet, "127.0.0.1", scp.port]})
    assert server.http.post("/modalities/scp/query", json={"Level": "Patient",
                                                           "Query": {"PatientName": "X"}}).is_success
    assert "PatientName" not in scp.queries[-1][0]


def test_echo_with_check_find(reference: OrthancPeer, luabroker: Any) -> None:
    refusing = OrthancPeer.create().start()  # C-FIND only from its modalities, and we are none of them
    try:
        server = luabroker(DicomModalities={"x": [reference.aet, "127.0.0.1", reference.dicom_port],
                                            "refusing": [refusing.aet, "127.0.0.1", refusing.dicom_port]})
        assert server.http.post("/modalities/x/echo", json={"CheckFind": True}).json() == {}
        echoed = server.http.post("/tools/dicom-echo", json={"AET": reference.aet, "Host": "127.0.0.1",
                                                             "Port": reference.dicom_port, "CheckFind": True})
        assert echoed.json() == {}
        assert server.http.post("/modalities/refusing/echo", content=b"").json() == {}
        refused = server.http.post("/modalities/refusing/echo", json={"CheckFind": True})
        assert (refused.status_code, refused.json()["OrthancStatus"]) == (500, 9)
        bad = server.http.post("/modalities/x/echo", json={"CheckFind": "yes"})
        assert (bad.status_code, bad.json()["OrthancStatus"]) == (400, 15)
        checking = luabroker(DicomEchoChecksFind=True,
                             DicomModalities={"refusing": [refusing.aet, "127.0.0.1", refusing.dicom_port]})
        assert checking.http.post("/modalities/refusing/echo", content=b"").status_code == 500
        assert checking.http.post("/modalities/refusing/echo", json={"CheckFind": False}).json() == {}
    finally:
        refusing.stop()


def test_a_filter_that_loops_fails_the_query_and_the_server_goes_on(luabroker: Any, recording_scp: Any) -> None:
    scp = recording_scp()
    source = "function OutgoingFindRequestFilter(q, aet) if q['0010,0020'] == 'LOOP' then while true do end end " \
             "return q end"
    server = luabroker(scripts={"filter.lua": source}, DicomModalities={"scp": [scp.aet, "127.0.0.1", scp.port]})
    looping = server.http.post("/modalities/scp/query", json={"Level": "Patient", "Query": {"PatientID": "LOOP"}})
    assert looping.status_code == 500 and scp.queries == []
    # The main process is restarted after the hard deadline; meanwhile a query fails (closed policy).
    wait_until(lambda: server.http.post("/modalities/scp/query", json={"Level": "Patient",
                                                                      "Query": {"PatientID": "P1"}}).is_success,
               message="a query once the main process is back")
    assert scp.queries[-1][0].PatientID == "P1"
