"""``DicomAlwaysAllowEcho`` and ``DicomAlwaysAllowStore`` (Orthanc's, both true by default): when false,
C-ECHO and C-STORE are served only to the modalities of ``DicomModalities`` that have ``AllowEcho`` and
``AllowStore``, and any other request aborts the association, as Orthanc does; with every
``DicomAlwaysAllow*`` option off, an AET that no modality has cannot even associate (Orthanc's
``IsAllowedConnection``)."""
from __future__ import annotations

from typing import Any

from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from broker.dicom.sockets import NODELAY_HANDLERS, pause_reactor
from tests.support.factory import make_instances

MODALITIES = {"known": ["KNOWN", "127.0.0.1", 104],
              "refused": {"AET": "REFUSED", "Host": "127.0.0.1", "Port": 104, "AllowEcho": False,
                          "AllowStore": False}}


def associate(server: Any, calling: str) -> Any:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    return ae.associate("127.0.0.1", server.dicom_port, ae_title=server.aet, evt_handlers=NODELAY_HANDLERS)


def echo_and_store(server: Any, calling: str, ds: Any) -> tuple[int | None, int | None]:
    """The statuses of a C-ECHO and of a C-STORE, each on its own association; None when the
    association was aborted instead of answered."""
    statuses: list[int | None] = []
    for send in (lambda assoc: assoc.send_c_echo(), lambda assoc: assoc.send_c_store(ds)):
        assoc = associate(server, calling)
        assert assoc.is_established
        pause_reactor(assoc)
        status = send(assoc)
        statuses.append(int(status.Status) if "Status" in status else None)
        if assoc.is_established:
            assoc.release()
        else:
            assert assoc.is_aborted
    return statuses[0], statuses[1]


def test_echo_and_store_are_served_only_to_the_modalities_that_allow_them(luabroker: Any) -> None:
    server = luabroker(DicomModalities=MODALITIES, DicomAlwaysAllowEcho=False, DicomAlwaysAllowStore=False,
                       DicomAlwaysAllowFind=True)  # an unknown AET may still associate: refused per request
    known, refused, stranger = make_instances(3)
    assert echo_and_store(server, "KNOWN", known) == (0x0000, 0x0000)
    assert echo_and_store(server, "REFUSED", refused) == (None, None)
    assert echo_and_store(server, "STRANGER", stranger) == (None, None)
    stored = [server.http.get(f"/instances/{i}").json()["MainDicomTags"]["SOPInstanceUID"]
              for i in server.http.get("/instances").json()]
    assert stored == [known.SOPInstanceUID]


def test_with_every_always_allow_off_an_unknown_aet_cannot_associate(luabroker: Any) -> None:
    server = luabroker(DicomModalities=MODALITIES, DicomAlwaysAllowEcho=False, DicomAlwaysAllowStore=False)
    assert associate(server, "STRANGER").is_rejected
    assoc = associate(server, "KNOWN")
    assert assoc.is_established
    assoc.release()


def test_by_default_any_aet_may_echo_and_store(luabroker: Any) -> None:
    server = luabroker(DicomModalities=MODALITIES)
    assert echo_and_store(server, "STRANGER", make_instances(1)[0]) == (0x0000, 0x0000)
