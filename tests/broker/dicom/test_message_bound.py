"""``MaximumDicomMessageSize``: a C-STORE whose dataset passes the bound aborts its association as soon
as the bound is passed; nothing of it is stored, what was acknowledged before stays, and the server
goes on serving."""
from __future__ import annotations

import os
import subprocess
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import SecondaryCaptureImageStorage  # type: ignore[attr-defined]

from broker.config import Config
from broker.dicom.sockets import NODELAY_HANDLERS, pause_reactor
from tests.support.dicom_samples import encode, minimal
from tests.support.server import echo


def instance(size: int) -> Dataset:
    ds = minimal(Rows=size // 1000, Columns=1000, BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0,
                 SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2")
    ds.PixelData = b"\x01" * (size // 1000 * 1000)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def c_store(server: Any, datasets: list[Dataset]) -> tuple[list[int | None], bool]:
    """The status of each C-STORE on one association (None when none came), and whether it was aborted."""
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(SecondaryCaptureImageStorage, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.aet, evt_handlers=NODELAY_HANDLERS)
    assert assoc.is_established
    statuses: list[int | None] = []
    try:
        for ds in datasets:
            if not assoc.is_established:
                statuses.append(None)
                continue
            try:
                pause_reactor(assoc)
                status = assoc.send_c_store(ds)
            except RuntimeError:  # the association ended under the request
                statuses.append(None)
                continue
            statuses.append(status.Status if "Status" in status else None)
    finally:
        aborted = assoc.is_aborted
        if assoc.is_established:
            assoc.release()
    return statuses, aborted


def test_a_message_over_the_bound_aborts_its_association_and_stores_nothing(luabroker: Any) -> None:
    server = luabroker(MaximumDicomMessageSize=1)  # MB
    small, large, after = instance(100_000), instance(3 * 1024 * 1024), instance(100_000)
    statuses, aborted = c_store(server, [small, large, after])
    assert statuses[0] == 0x0000 and statuses[1] is None and statuses[2] is None and aborted
    stored = {item["MainDicomTags"]["SOPInstanceUID"] for item in server.http.get("/instances?expand").json()}
    assert stored == {small.SOPInstanceUID}  # what was acknowledged stays; nothing of the large one
    assert echo(server) == 0x0000  # the server goes on
    statuses, _ = c_store(server, [after])
    assert statuses == [0x0000]


def test_the_bound_is_read_in_mb_and_zero_means_none(tmp_path: Any) -> None:
    for value, expected in ((1, 1024 * 1024), (0, None)):
        path = tmp_path / f"{value}.json"
        path.write_text(f'{{"MaximumDicomMessageSize": {value}}}')
        assert Config.load(path).input_bounds.max_dicom_message == expected
    assert Config.load(tmp_path / "0.json").input_bounds.max_body is not None


def test_a_message_in_many_pdus_is_bounded_too(luabroker: Any, tmp_path: Any) -> None:
    """DCMTK's storescu sending in 16 KiB PDUs: the message is refused as it grows past the bound."""
    server = luabroker(MaximumDicomMessageSize=1)
    large = tmp_path / "large.dcm"
    large.write_bytes(encode(instance(3 * 1024 * 1024)))
    run = subprocess.run(["storescu", "--max-send-pdu", "16384", "-aec", server.aet, "127.0.0.1",
                          str(server.dicom_port), str(large)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TCP_NODELAY": "1"})
    assert run.returncode != 0 or "Abort" in run.stderr
    assert server.http.get("/instances").json() == []
    assert echo(server) == 0x0000
