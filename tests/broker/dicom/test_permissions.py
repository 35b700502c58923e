"""Who may ask the DICOM server (broker/dicom/permissions.py) and how a calling AET or a Move Destination
names its modalities (``NetworkRegistry.same_aet``): ``StrictAetComparison``, ``DicomCheckModalityHost`` and
``DicomCheckCalledAet``, over real associations, compared with a real Orthanc 1.10.1 under the same
options."""
from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
)

from broker.config.network import Modality
from broker.dicom.permissions import is_allowed
from broker.dicom.sockets import NODELAY_HANDLERS, pause_reactor
from broker.network import NetworkRegistry
from tests.broker.dicom.test_retrieve_scp import c_move, identifier, loaded
from tests.support.factory import make_instances, to_bytes
from tests.support.orthanc_peer import ORTHANC_BINARY, OrthancPeer
from tests.support.receivers import DCMTK_ENV, HAS_DCMTK
from tests.support.server import Running
from tests.support.worklist_samples import query as worklist_query
from tests.support.worklist_samples import two_stations

needs_orthanc = pytest.mark.skipif(ORTHANC_BINARY is None, reason="Orthanc is not installed")
needs_dcmtk = pytest.mark.skipif(not HAS_DCMTK, reason="DCMTK is not installed")


def test_same_aet() -> None:
    """Case is ignored (ASCII only, as Orthanc's ``ToLowerCase``) unless strict; the wire's padding never
    counts, the configured AET is taken as written."""
    lenient, strict = NetworkRegistry(), NetworkRegistry(strict_aet_comparison=True)
    assert lenient.same_aet("modality ", "MODALITY") and not strict.same_aet("modality", "MODALITY")
    assert lenient.same_aet("MODALITY ", "MODALITY") and strict.same_aet("MODALITY ", "MODALITY")
    assert not lenient.same_aet("MODALITY", " MODALITY")
    assert not lenient.same_aet("É", "é")


def modality(aet: str, host: str, **allow: bool) -> Modality:
    return Modality(aet=aet, host=host, port=1, **allow)


@pytest.mark.parametrize(("modalities", "check_host", "allowed"), [
    ([], False, False),
    ([modality("A", "10.0.0.1")], False, True),
    ([modality("A", "10.0.0.1", allow_find=False)], False, False),
    ([modality("A", "10.0.0.2")], True, False),
    ([modality("A", "host.example")], True, False),  # a host name never matches an address, as in Orthanc
    ([modality("A", "10.0.0.1")], True, True),
    # Several modalities with the AET: every one must allow it...
    ([modality("A", "10.0.0.1"), modality("a", "10.0.0.2", allow_find=False)], False, False),
    ([modality("A", "10.0.0.2"), modality("a", "10.0.0.3")], False, True),
    # ... or, with the host checked, one that allows it from this address; when all allow it, any address.
    ([modality("A", "10.0.0.1"), modality("a", "10.0.0.2", allow_find=False)], True, True),
    ([modality("A", "10.0.0.2"), modality("a", "10.0.0.1", allow_find=False)], True, False),
    ([modality("A", "10.0.0.2"), modality("a", "10.0.0.3")], True, True),
])
def test_is_allowed_follows_orthanc(modalities: list[Modality], check_host: bool, allowed: bool) -> None:
    network = NetworkRegistry({f"m{index}": m for index, m in enumerate(modalities)}, check_modality_host=check_host)
    assert is_allowed(network, "A", "allow_find", always=False, remote_ip="10.0.0.1") is allowed
    assert is_allowed(network, "A", "allow_find", always=True, remote_ip="10.0.0.9")


def c_find(port: int, aet: str, calling: str, model: str = PatientRootQueryRetrieveInformationModelFind,
           query: Dataset | None = None) -> int | str:
    """The final status of a C-FIND (by default, of every patient), or "aborted"."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", port, ae_title=aet, evt_handlers=NODELAY_HANDLERS)
    assert assoc.is_established
    try:
        pause_reactor(assoc)
        query = identifier("PATIENT", PatientID="*") if query is None else query
        statuses = [status.get("Status") for status, _ in assoc.send_c_find(query, model)]
    finally:
        if assoc.is_established:
            assoc.release()
    return "aborted" if None in statuses else statuses[-1]


def table(receiver_port: int) -> dict[str, Any]:
    return {
        "findscu": ["FINDSCU", "127.0.0.1", 1],
        "by-name": ["BYNAME", "localhost", 1],
        "elsewhere": ["ELSEWHERE", "127.0.0.2", 1],
        "twin1": {"AET": "TWIN", "Host": "127.0.0.2", "Port": 1},
        "twin2": {"AET": "twin", "Host": "127.0.0.1", "Port": 1, "AllowFind": False},
        "twin3": {"AET": "TWIN2", "Host": "127.0.0.2", "Port": 1, "AllowFind": False},
        "twin4": {"AET": "TWIN2", "Host": "127.0.0.1", "Port": 1},
        "movescu": ["MOVESCU", "127.0.0.1", 1],
        "dest": ["DEST", "127.0.0.1", receiver_port],
    }


def scenarios(port: int, aet: str, study: str) -> dict[str, Any]:
    return {
        **{caller: c_find(port, aet, caller)
           for caller in ("FINDSCU", "findscu", "BYNAME", "ELSEWHERE", "TWIN", "TWIN2", "STRANGER")},
        "move to dest": c_move(port, aet, "dest", identifier("STUDY", StudyInstanceUID=study)),
    }


@needs_orthanc
@pytest.mark.parametrize("options", [{}, {"StrictAetComparison": True}, {"DicomCheckModalityHost": True}],
                         ids=["default", "StrictAetComparison", "DicomCheckModalityHost"])
def test_callers_and_destinations_as_orthanc(luabroker: Callable[..., Running], recording_scp: Any,
                                             options: dict[str, Any]) -> None:
    receiver = recording_scp(aet="DEST")
    instances = make_instances(1)
    study = str(instances[0].StudyInstanceUID)
    config = {"DicomModalities": table(receiver.port), **options}
    orthanc = OrthancPeer.create(**config).start()
    try:
        orthanc.upload(to_bytes(instances[0]))
        expected = scenarios(orthanc.dicom_port, orthanc.aet, study)
    finally:
        orthanc.stop()
    server = loaded(luabroker, instances, **config)
    assert scenarios(server.dicom_port, server.aet, study) == expected
    # What the three configurations show, so that a change in Orthanc's rules is seen here.
    assert expected["findscu"] == ("aborted" if options.get("StrictAetComparison") else 0x0000)
    assert expected["BYNAME"] == expected["ELSEWHERE"] == ("aborted" if options.get("DicomCheckModalityHost")
                                                          else 0x0000)


def test_the_host_of_a_worklist_caller_is_checked(luabroker: Callable[..., Running], tmp_path: Path) -> None:
    folder = tmp_path / "worklists"
    folder.mkdir()
    two_stations(folder)
    server = luabroker(Worklists={"Enable": True, "Database": str(folder)}, DicomCheckModalityHost=True,
                       DicomModalities={"here": ["HERE", "127.0.0.1", 1], "there": ["THERE", "127.0.0.2", 1]})
    for calling, outcome in (("HERE", 0x0000), ("THERE", "aborted")):
        assert c_find(server.dicom_port, server.aet, calling, ModalityWorklistInformationFind, worklist_query()) == \
            outcome


def association(port: int, called: str) -> str:
    """"accepted", or why DCMTK's echoscu says the association was rejected (pynetdicom, as requestor, can
    take Orthanc's rejection followed at once by the end of the connection for an abort)."""
    done = subprocess.run(["echoscu", "-aet", "CALLER", "-aec", called, "127.0.0.1", str(port)],
                          capture_output=True, text=True, timeout=60, env=DCMTK_ENV)
    if done.returncode == 0:
        return "accepted"
    return " ".join(line.split(": ", 1)[1].strip() for line in done.stderr.splitlines()
                    if "Result:" in line or "Reason:" in line)


@needs_orthanc
@needs_dcmtk
@pytest.mark.parametrize("options", [{}, {"DicomCheckCalledAet": True},
                                     {"DicomCheckCalledAet": True, "StrictAetComparison": True}],
                         ids=["default", "DicomCheckCalledAet", "strict"])
def test_the_called_aet_as_orthanc(luabroker: Callable[..., Running], options: dict[str, Any]) -> None:
    def outcomes(port: int, aet: str) -> list[str]:
        return [association(port, called) for called in (aet, aet.lower(), "SOMEONE")]

    orthanc = OrthancPeer.create(**options).start()
    try:
        expected = outcomes(orthanc.dicom_port, orthanc.aet)
    finally:
        orthanc.stop()
    server = luabroker(**options)
    assert outcomes(server.dicom_port, server.aet) == expected
    assert expected[2] == ("accepted" if not options else
                           "Result: Rejected Permanent, Source: Service User Reason: Called AE Title Not Recognized")
