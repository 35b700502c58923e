"""The DICOM front end with independent clients: DCMTK's storescu/echoscu and pynetdicom."""
from __future__ import annotations

import os
import shutil
import subprocess
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from broker.dicom.sockets import NODELAY_HANDLERS, pause_reactor
from tests.support.factory import make_instances, write_files

needs_dcmtk = pytest.mark.skipif(shutil.which("storescu") is None, reason="DCMTK is not installed")
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def storescu(port: int, called: str, files: list[Path], calling: str = "STORESCU") -> subprocess.CompletedProcess:
    return subprocess.run(["storescu", "-aet", calling, "-aec", called, "127.0.0.1", str(port), *map(str, files)],
                          capture_output=True, text=True, timeout=120, env=DCMTK_ENV)


@needs_dcmtk
def test_echoscu_gets_success(luabroker):
    server = luabroker()
    run = subprocess.run(["echoscu", "-aec", server.aet, "127.0.0.1", str(server.dicom_port)],
                         capture_output=True, text=True, timeout=30, env=DCMTK_ENV)
    assert run.returncode == 0, run.stderr


@needs_dcmtk
def test_storescu_instances_are_stored_with_dicom_origin_metadata(luabroker, tmp_path):
    server = luabroker()
    files = write_files(make_instances(5, series=2), tmp_path / "files")

    run = storescu(server.dicom_port, server.aet, files, calling="MODALITY1")

    assert run.returncode == 0, run.stderr
    instances = server.http.get("/instances").json()
    assert len(instances) == 5
    metadata = server.http.get(f"/instances/{instances[0]}/metadata", params={"expand": ""}).json()
    assert metadata["Origin"] == "DicomProtocol"
    assert metadata["RemoteAET"] == "MODALITY1"
    assert metadata["CalledAET"] == server.aet
    assert metadata["RemoteIP"] == "127.0.0.1"
    assert len(server.http.get("/series").json()) == 2


@needs_dcmtk
def test_resource_ids_equal_orthancs_for_the_same_files(luabroker, orthanc_peer, tmp_path):
    server = luabroker()
    files = write_files(make_instances(3, series=2) + make_instances(2, patient_id="OTHER"), tmp_path / "files")

    assert storescu(server.dicom_port, server.aet, files).returncode == 0
    assert storescu(orthanc_peer.dicom_port, orthanc_peer.aet, files).returncode == 0

    for level in ("patients", "studies", "series", "instances"):
        ours = set(server.http.get(f"/{level}").json())
        theirs = set(orthanc_peer.client.get(f"/{level}").json())
        assert ours and theirs >= ours, level


@needs_dcmtk
def test_a_received_file_has_orthancs_layout(luabroker, orthanc_peer, tmp_path):
    # The file meta is rewritten on reception as DCMTK rewrites it for Orthanc: no SourceApplication-
    # EntityTitle, a version name as long as DCMTK's, so PixelData starts at the same offset.
    server = luabroker()
    files = write_files(make_instances(1), tmp_path / "files")
    assert storescu(server.dicom_port, server.aet, files).returncode == 0
    assert storescu(orthanc_peer.dicom_port, orthanc_peer.aet, files).returncode == 0
    instance = server.http.get("/instances").json()[0]

    def meta_and_offset(client) -> tuple[list[str], str]:
        stored = dcmread(BytesIO(client.get(f"/instances/{instance}/file").content))
        offset = client.get(f"/instances/{instance}/metadata/PixelDataOffset").text
        return [element.keyword for element in stored.file_meta], offset

    ours, theirs = meta_and_offset(server.http), meta_and_offset(orthanc_peer.client)
    assert ours == theirs
    assert int(ours[1]) > 0


def test_pynetdicom_c_store_and_duplicates(luabroker):
    server = luabroker()
    instances = make_instances(3)
    assert server.c_store(instances) == [0, 0, 0]
    assert server.c_store(instances[:1]) == [0]  # AlreadyStored is a success too
    assert len(server.http.get("/instances").json()) == 3


def test_malformed_dataset_over_c_store_is_refused_and_server_stays_up(luabroker, tmp_path):
    server = luabroker()
    good = make_instances(1)[0]
    broken = tmp_path / "broken.dcm"
    # A valid file meta followed by a dataset that is not DICOM, sent raw (chunked, never decoded):
    # a tag whose declared length runs far past the end of the data.
    meta = BytesIO()
    meta.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(meta, good.file_meta, enforce_standard=True)
    broken.write_bytes(meta.getvalue() + b"\x08\x00\x16\x00UI\xff\x7f" + os.urandom(300))

    ae = AE(ae_title="FUZZ")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    ae.add_requested_context(Verification)
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.aet, evt_handlers=NODELAY_HANDLERS)
        pause_reactor(assoc)  # else, on a loaded machine, pynetdicom can lose the response
        status = assoc.send_c_store(broken)
        assert status.Status in (0xA700, 0xC000)
        pause_reactor(assoc)
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    assert server.http.get("/instances").json() == []
    assert server.c_store([good]) == [0]


@pytest.mark.parametrize("name", ["rtplan_truncated.dcm", "no_meta.dcm", "badVR.dcm", "MR_truncated.dcm"])
def test_pydicom_problem_files_never_take_the_server_down(luabroker, name):
    from pydicom.data import get_testdata_file

    server = luabroker()
    data = Path(get_testdata_file(name)).read_bytes()
    answer = server.http.post("/instances", content=data)
    assert answer.status_code in (200, 400), answer.text
    if answer.status_code == 400:
        assert answer.json()["Message"] == "Bad file format"
        assert server.http.get("/instances").json() == []
    assert server.http.get("/system").status_code == 200
    assert server.c_store(make_instances(1)) == [0]


def test_non_dicom_body_answers_400_with_a_message(luabroker):
    server = luabroker()
    answer = server.http.post("/instances", content=b"hello, this is not DICOM")
    assert answer.status_code == 400
    assert answer.json()["OrthancStatus"] == 15 and answer.json()["Details"]


@needs_dcmtk
def test_the_called_aet_is_recorded_as_the_peer_called_it(luabroker, tmp_path):
    """As Orthanc, the server accepts any called AET, and CalledAET says which one was called."""
    server = luabroker()
    files = write_files(make_instances(1), tmp_path / "files")
    assert storescu(server.dicom_port, "ANY-SCP", files).returncode == 0
    [instance] = server.http.get("/instances").json()
    assert server.http.get(f"/instances/{instance}/metadata/CalledAET").text == "ANY-SCP"
