"""The worklist C-FIND SCP with real clients (DCMTK's ``findscu -W``, pynetdicom) and real sandboxes,
compared with a real Orthanc 1.10 and its sample worklist plugin serving the same folder."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from broker.dicom.sockets import NODELAY_HANDLERS
from tests.broker.dicom.test_cancel import (
    MESSAGE_ID,
    Holder,
    Target,
    associate,
    cancelled_while_held,
    luabroker_has_cancel,
    orthanc_has_cancel,
)
from tests.broker.dicom.test_find_scp import DCMTK_ENV, findscu, needs_dcmtk, needs_orthanc, pynetdicom_find
from tests.support.factory import make_instances
from tests.support.orthanc_peer import ORTHANC_BINARY, OrthancPeer
from tests.support.worklist_samples import query, two_stations, worklist, write_worklist

WORKLIST_PLUGIN = Path("/usr/share/orthanc/plugins/libModalityWorklists.so")
STATION = "(0040,0001) #"  # the start of the key findscu gives ScheduledStationAETitle inside the sequence


def station_keys(aet: str | None = None) -> list[str]:
    """findscu's keys of a query for the names, IDs and the scheduled step (station, date, modality)."""
    station = "(0040,0100)[0].ScheduledStationAETitle" + ("" if aet is None else f"={aet}")
    return ["PatientName", "PatientID", "AccessionNumber", station,
            "(0040,0100)[0].ScheduledProcedureStepStartDate", "(0040,0100)[0].Modality"]


def stations(found) -> list[str]:
    """The ScheduledStationAETitle of the answers, without padding."""
    return [value.rstrip() for answer in found.answers for key, (_, value) in answer.items() if key.startswith(STATION)]


def mwl(server, keys: list[str], calling: str = "ORTHANCTEST"):
    return findscu(server.dicom_port, server.aet, keys, model="-W", calling=calling)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "worklists"
    path.mkdir()
    return path


@pytest.fixture
def serving(luabroker, folder):
    """A luabroker serving ``folder``; more options (``Worklists`` members included) as keyword arguments."""
    def start(scripts: dict[str, str] | None = None, worklists: dict | None = None, **options):
        section = {"Enable": True, "Database": str(folder), **(worklists or {})}
        return luabroker(scripts=scripts, Worklists=section,
                         **{"DicomAlwaysAllowFindWorklist": True, "ExecuteLuaEnabled": True, **options})
    return start


@needs_dcmtk
def test_both_worklists_match_a_query_without_station_and_one_with(serving, folder):
    two_stations(folder)
    (folder / "notes.txt").write_text("not a worklist")
    server = serving()
    everything = mwl(server, station_keys())
    assert everything.status == "Success"
    assert everything.values("(0010,0020)") == ["P7814", "P7815"]
    assert mwl(server, station_keys("STATION_AET")).values("(0010,0020)") == ["P7814"]
    assert mwl(server, station_keys("NOBODY")).answers == []


LUA_ISSUER_AET = """
function IncomingWorklistRequestFilter(query, origin)
  query['0040,0100'][1]['0040,0001'] = origin['RemoteAet']
  return query
end
"""


@needs_dcmtk
def test_filter_issuer_aet_from_lua(serving, folder):
    """Orthanc's ``test_filter_issuer_aet_from_lua``: matches go from 2 to 1."""
    two_stations(folder)
    server = serving()
    assert len(mwl(server, station_keys()).answers) == 2
    assert server.execute(LUA_ISSUER_AET).status_code == 200
    filtered = mwl(server, station_keys())
    assert filtered.values("(0010,0020)") == ["P7815"]
    assert stations(filtered) == ["ORTHANCTEST"]


@needs_dcmtk
def test_remove_aet_from_query(serving, folder):
    """Orthanc's ``test_remove_aet_from_query``: matches go from 0 to 1."""
    write_worklist(folder, "other.wl", worklist("P7815", "Doe^Jane", "ORTHANCTEST"))
    server = serving()
    assert mwl(server, station_keys("STATION_AET")).answers == []
    script = "function IncomingWorklistRequestFilter(query, origin)\n" \
             "  query['0040,0100'][1]['0040,0001'] = nil\n  return query\nend"
    assert server.execute(script).status_code == 200
    assert mwl(server, station_keys("STATION_AET")).values("(0010,0020)") == ["P7815"]


@needs_dcmtk
def test_filter_issuer_aet_option_replaces_the_station_asked(serving, folder):
    """``FilterIssuerAet``: the calling AET replaces any ScheduledStationAETitle of the query (Orthanc's
    plugin), and the answers keep the tags of the query as asked."""
    two_stations(folder)
    server = serving(worklists={"FilterIssuerAet": True})
    assert mwl(server, station_keys()).values("(0010,0020)") == ["P7815"]
    assert mwl(server, station_keys("STATION_AET")).values("(0010,0020)") == ["P7815"]
    assert mwl(server, station_keys(), calling="STATION_AET").values("(0010,0020)") == ["P7814"]
    only_id = mwl(server, ["PatientID"], calling="STATION_AET")
    assert [sorted(answer) for answer in only_id.answers] == [["(0008,0005)", "(0010,0020)"]]
    assert only_id.values("(0010,0020)") == ["P7814"]
    assert mwl(server, ["PatientID"], calling="NOBODY").answers == []


def folder_of_three(folder: Path) -> None:
    write_worklist(folder, "a.wl", worklist("PA", "Doe^John", "CT1", accession="A1", date="20240115"))
    write_worklist(folder, "b.WL", worklist("PB", "DOE^JANE", "MR1", accession="A22", date="20240301",
                                            modality="MR"), part10=False)
    write_worklist(folder, "c.wl", worklist("PC", "Smith^Anna", "CT1", accession="B3", date="20231231"))


def accented(folder: Path) -> None:
    """Two worklists with names beyond ASCII: one in Latin-1, one in UTF-8 (Cyrillic)."""
    write_worklist(folder, "latin1.wl", worklist("PL", "Müller^Jörg", "CT1", accession="L1"))
    utf8 = worklist("PU", "Иванов^Иван", "CT1", accession="U1")
    utf8.SpecificCharacterSet = "ISO_IR 192"
    write_worklist(folder, "utf8.wl", utf8)


#: (keys, the PatientIDs that match): wildcards (case-insensitive on names), lists, date ranges and
#: values inside the sequence.
MATCHES = [
    (["PatientName=doe*", "PatientID"], ["PA", "PB"]),
    (["PatientName=Smith^Ann?", "PatientID"], ["PC"]),
    (["AccessionNumber=A1\\B3", "PatientID"], ["PA", "PC"]),
    (["AccessionNumber=a1", "PatientID"], []),  # case-sensitive
    (["PatientID", "(0040,0100)[0].ScheduledProcedureStepStartDate=20240101-"], ["PA", "PB"]),
    (["PatientID", "(0040,0100)[0].ScheduledProcedureStepStartDate=-20240115"], ["PA", "PC"]),
    (["PatientID", "(0040,0100)[0].Modality=MR"], ["PB"]),
    (["PatientID", "(0040,0100)[0].Modality=CT", "(0040,0100)[0].ScheduledStationAETitle=C?1"], ["PA", "PC"]),
    (["PatientID", "(0040,0100)[0].ScheduledProcedureStepStartDate=20240101-20240131",
      "(0040,0100)[0].Modality=CT"], ["PA"]),
    (["PatientID", "ScheduledProcedureStepSequence"], ["PA", "PB", "PC"]),
]


@needs_dcmtk
@pytest.mark.parametrize(("keys", "expected"), MATCHES, ids=[" ".join(keys) for keys, _ in MATCHES])
def test_matching(serving, folder, keys, expected):
    folder_of_three(folder)
    found = mwl(serving(), keys)
    assert found.status == "Success"
    assert found.values("(0010,0020)") == expected


@needs_dcmtk
def test_a_wildcard_on_a_date_fails_as_in_orthanc(serving, folder):
    folder_of_three(folder)
    found = mwl(serving(), ["PatientID", "(0040,0100)[0].ScheduledProcedureStepStartDate=2024*"])
    assert found.status == "Failed: UnableToProcess"


def test_answers_hold_the_tags_asked_only(serving, folder):
    folder_of_three(folder)
    server = serving()
    asked = query(station_aet="CT1", AccessionNumber="A1")
    asked.SOPInstanceUID = ""
    answers = list(pynetdicom_find(server.dicom_port, server.aet, ModalityWorklistInformationFind, asked))
    assert [status for status, _ in answers] == [0xFF00, 0x0000]
    answer = answers[0][1]
    assert answer is not None
    assert sorted(element.keyword for element in answer) == [
        "AccessionNumber", "PatientID", "PatientName", "ScheduledProcedureStepSequence", "SpecificCharacterSet"]
    assert answer.SpecificCharacterSet == "ISO_IR 100"
    assert (answer.PatientName, answer.AccessionNumber) == ("Doe^John", "A1")
    step = answer.ScheduledProcedureStepSequence[0]
    assert sorted(element.keyword for element in step) == [
        "Modality", "ScheduledProcedureStepStartDate", "ScheduledStationAETitle"]


def test_limit_answers_sends_one_more_and_cancels_as_orthanc(serving, folder):
    folder_of_three(folder)
    server = serving(worklists={"LimitAnswers": 1})
    statuses = [status for status, _ in pynetdicom_find(server.dicom_port, server.aet,
                                                        ModalityWorklistInformationFind, query())]
    assert statuses == [0xFF00, 0xFF00, 0xFE00]


FAILING_FILTERS = {
    "error": "function IncomingWorklistRequestFilter(query, origin) error('no') end",
    "loop": "function IncomingWorklistRequestFilter(query, origin) while true do end end",
    "nil": "function IncomingWorklistRequestFilter(query, origin) return nil end",
    "string": "function IncomingWorklistRequestFilter(query, origin) return 'x' end",
    "empty table": "function IncomingWorklistRequestFilter(query, origin) return {} end",
    "boolean value": "function IncomingWorklistRequestFilter(query, origin) query['0010,0020'] = true return query end",
    "unknown name": "function IncomingWorklistRequestFilter(query, origin) query['NoSuchTag'] = '' return query end",
    "two items": "function IncomingWorklistRequestFilter(query, origin)\n"
                 "  query['0040,0100'][2] = {} return query end",
}


@needs_dcmtk
@pytest.mark.parametrize("source", FAILING_FILTERS.values(), ids=FAILING_FILTERS.keys())
def test_failing_worklist_filter_answers_unable_to_process_and_storing_goes_on(serving, folder, source):
    two_stations(folder)
    server = serving(scripts={"filter.lua": source})
    assert mwl(server, station_keys()).status == "Failed: UnableToProcess"
    assert server.c_store(make_instances(1, patient_id="AFTER")) == [0x0000]
    assert mwl(server, station_keys()).status == "Failed: UnableToProcess"


@needs_dcmtk
def test_worklist_filter_sees_the_whole_query_and_the_origin(serving, folder):
    two_stations(folder)
    script = """
function IncomingWorklistRequestFilter(query, origin)
  assert(origin.RemoteAet == 'ORTHANCTEST' and origin.CalledAet == 'LUABROKER' and origin.RemoteIp == '127.0.0.1')
  assert(origin.Manufacturer == 'GE')
  assert(query['0010,0010'] == '' and query['0040,0100'][1]['0008,0060'] == '')
  return { PatientID = 'P7814', ['0040-0100'] = { { ['00400001'] = '' } } }
end
"""
    server = serving(scripts={"filter.lua": script},
                     DicomModalities={"test": ["ORTHANCTEST", "127.0.0.1", 104, "GE"]})
    found = mwl(server, station_keys())
    assert found.status == "Success"
    assert found.values("(0010,0020)") == ["P7814"] and stations(found) == ["STATION_AET"]
    assert {key for key in found.answers[0] if not key.startswith("(fffe")} == {
        "(0008,0005)", "(0010,0020)", "(0040,0100)", next(key for key in found.answers[0] if key.startswith(STATION))}


@needs_dcmtk
def test_a_worklist_filter_that_hangs_does_not_hold_c_store(serving, folder):
    two_stations(folder)
    script = "function IncomingWorklistRequestFilter(query, origin) while true do end end\n" \
             "function ReceivedInstanceFilter(tags, origin, info) return true end"
    server = serving(scripts={"filter.lua": script})
    args = ["findscu", "-v", "-W", "-aet", "ORTHANCTEST", "-aec", server.aet, "127.0.0.1", str(server.dicom_port),
            "-k", "PatientID"]
    with subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=DCMTK_ENV) as find:
        assert server.c_store(make_instances(3, patient_id="DURING")) == [0x0000] * 3
        _, stderr = find.communicate(timeout=120)
    assert "Final Find Response (Failed: UnableToProcess)" in stderr
    assert len(server.http.get("/instances").json()) == 3


@needs_dcmtk
def test_a_worklist_that_is_not_dicom_or_a_missing_folder_fails(serving, folder):
    two_stations(folder)
    server = serving()
    (folder / "broken.wl").write_bytes(b"\x00\x01not a dicom file at all")
    assert mwl(server, station_keys()).status == "Failed: UnableToProcess"
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    assert mwl(server, station_keys()).status == "Failed: UnableToProcess"


def worklist_context_accepted(port: int, aet: str, calling: str = "PYNETDICOM") -> bool:
    ae = AE(ae_title=calling)
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", port, ae_title=aet, evt_handlers=NODELAY_HANDLERS)
    try:
        return assoc.is_established and any(context.abstract_syntax == ModalityWorklistInformationFind
                                            for context in assoc.accepted_contexts)
    finally:
        if assoc.is_established:
            assoc.release()


def test_the_worklist_model_is_refused_unless_enabled(luabroker, serving, folder):
    disabled = luabroker(DicomAlwaysAllowFindWorklist=True, Worklists={"Enable": False, "Database": str(folder)})
    assert not worklist_context_accepted(disabled.dicom_port, disabled.aet)
    assert disabled.http.get("/worklists").status_code == 404
    assert "1.2.840.10008.5.1.4.31" not in disabled.http.get("/tools/dicom-conformance").text
    enabled = serving()
    assert worklist_context_accepted(enabled.dicom_port, enabled.aet)
    assert "1.2.840.10008.5.1.4.31" in enabled.http.get("/tools/dicom-conformance").text


def test_only_allowed_modalities_may_query_the_worklists(serving, folder):
    two_stations(folder)
    server = serving(DicomAlwaysAllowFindWorklist=False, DicomAlwaysAllowFind=True,
                     DicomModalities={"allowed": {"AET": "ALLOWED", "Host": "127.0.0.1", "Port": 104},
                                      "denied": {"AET": "DENIED", "Host": "127.0.0.1", "Port": 104,
                                                 "AllowFindWorklist": False}})
    ae = AE(ae_title="DENIED")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.aet, evt_handlers=NODELAY_HANDLERS)
    assert assoc.is_established
    responses = list(assoc.send_c_find(query(), ModalityWorklistInformationFind))
    assert assoc.is_aborted or all(not status or status.Status != 0xFF00 for status, _ in responses)
    assoc.release()
    ae = AE(ae_title="ALLOWED")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.aet, evt_handlers=NODELAY_HANDLERS)
    try:
        statuses = [status.Status for status, _ in assoc.send_c_find(query(), ModalityWorklistInformationFind)]
    finally:
        assoc.release()
    assert statuses == [0xFF00, 0xFF00, 0x0000]


#: The queries luabroker and Orthanc answer alike.
COMPARED = [
    station_keys(),
    station_keys("STATION_AET"),
    ["PatientName=doe*", "PatientID", "PatientBirthDate", "SpecificCharacterSet"],
    ["AccessionNumber=A1\\B3", "PatientID", "RequestedProcedureDescription", "ReferencedStudySequence"],
    ["PatientID", "(0040,0100)[0].ScheduledProcedureStepStartDate=20240101-", "(0040,0100)[0].Modality"],
    ["PatientID", "ScheduledProcedureStepSequence"],
    ["PatientID", "(0040,0100)[0].ScheduledProcedureStepStartDate=2024*"],
    ["PatientID=P?", "PatientName", "SpecificCharacterSet"],
    ["PatientName=MÜLLER*", "PatientID"],
]


@needs_dcmtk
@needs_orthanc
@pytest.mark.skipif(not WORKLIST_PLUGIN.exists(), reason="Orthanc's sample worklist plugin is not installed")
@pytest.mark.parametrize(("options", "script"), [({}, ""), ({"FilterIssuerAet": True}, ""), ({"LimitAnswers": 2}, ""),
                                                 ({}, LUA_ISSUER_AET)], ids=["plain", "issuer", "limit", "lua"])
def test_findscu_gets_the_answers_of_orthanc(serving, folder, tmp_path, options, script):
    two_stations(folder)
    folder_of_three(folder)
    accented(folder)
    section = {"Enable": True, "Database": str(folder), **options}
    lua = tmp_path / "worklist.lua"
    lua.write_text(script)
    orthanc = OrthancPeer.create(Plugins=[str(WORKLIST_PLUGIN)], Worklists=section, LuaScripts=[str(lua)],
                                 DicomAlwaysAllowFindWorklist=True).start()
    try:
        server = serving(scripts={"worklist.lua": script}, worklists=options)
        answered = 0
        for keys in COMPARED:
            for calling in ("ORTHANCTEST", "CT1"):
                ours = mwl(server, keys, calling)
                theirs = findscu(orthanc.dicom_port, orthanc.aet, keys, model="-W", calling=calling)
                if "LimitAnswers" in options:  # which answers are cut depends on the order of the directory
                    assert (ours.status, len(ours.answers)) == (theirs.status, len(theirs.answers)), (keys, calling)
                else:
                    assert (ours.status, ours.comparable()) == (theirs.status, theirs.comparable()), (keys, calling)
                answered += len(ours.answers)
        assert answered >= 4  # not only failures
    finally:
        orthanc.stop()


@needs_dcmtk
@needs_orthanc
@pytest.mark.skipif(not WORKLIST_PLUGIN.exists(), reason="Orthanc's sample worklist plugin is not installed")
def test_answers_are_in_the_default_encoding_as_orthanc(serving, folder):
    accented(folder)
    orthanc = OrthancPeer.create(Plugins=[str(WORKLIST_PLUGIN)], Worklists={"Enable": True, "Database": str(folder)},
                                 DicomAlwaysAllowFindWorklist=True).start()
    try:
        server = serving()
        keys = ["PatientID", "PatientName", "SpecificCharacterSet"]
        for encoding in ("Utf8", "Latin1", "Cyrillic", "Ascii"):
            for client in (server.http, orthanc.client):
                assert client.put("/tools/default-encoding", content=encoding).status_code == 200
            ours = mwl(server, keys)
            theirs = findscu(orthanc.dicom_port, orthanc.aet, keys, model="-W", calling="ORTHANCTEST")
            assert ours.comparable() == theirs.comparable(), encoding
            assert len(ours.answers) == 2
    finally:
        orthanc.stop()



#: Holds the worklist C-FIND in its filter, after the first look for a C-CANCEL (test_cancel.py).
HOLDING_FILTER = """
function IncomingWorklistRequestFilter(query, origin)
  RestApiPost('/modalities/holder/echo', '{}')
  return query
end
"""


def test_a_c_cancel_during_the_query_ends_the_answers_as_in_orthanc(serving, folder, tmp_path):
    """As for the other C-FINDs: the C-CANCEL comes while the query runs, the first answer goes, then
    0xFE00; Orthanc with its plugin answers the same, when it is installed."""
    two_stations(folder)
    holder = Holder("HOLDER").start()

    def scenario(target: Target) -> list[int]:
        assoc = associate(target, ModalityWorklistInformationFind, calling="ORTHANCTEST",
                          evt_handlers=NODELAY_HANDLERS)
        return cancelled_while_held(target, holder, assoc, lambda: [
            status.Status for status, _ in
            assoc.send_c_find(query(), ModalityWorklistInformationFind, msg_id=MESSAGE_ID)],
            ModalityWorklistInformationFind)

    try:
        modalities = {"holder": holder.modality()}
        server = serving(scripts={"hold.lua": HOLDING_FILTER}, DicomModalities=modalities)
        assert scenario(Target(server.dicom_port, server.aet, luabroker_has_cancel)) == [0xFF00, 0xFE00]
        if ORTHANC_BINARY is None or not WORKLIST_PLUGIN.exists():
            return
        script = tmp_path / "hold.lua"
        script.write_text(HOLDING_FILTER)
        section = {"Enable": True, "Database": str(folder)}
        orthanc = OrthancPeer.create(Plugins=[str(WORKLIST_PLUGIN)], Worklists=section, LuaScripts=[str(script)],
                                     DicomModalities=modalities, DicomAlwaysAllowFindWorklist=True).start()
        try:
            target = Target(orthanc.dicom_port, orthanc.aet, orthanc_has_cancel(orthanc.dicom_port))
            assert scenario(target) == [0xFF00, 0xFE00]
        finally:
            orthanc.stop()
    finally:
        holder.stop()
