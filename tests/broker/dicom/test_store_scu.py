"""C-STORE SCU against real receivers: DCMTK's storescp, a real Orthanc, and a recording pynetdicom SCP."""
from __future__ import annotations

import time
from io import BytesIO

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

from broker.config.network import DicomOptions, Modality
from broker.dicom.scu import DicomNetworkError, StoreScu
from broker.network import NetworkRegistry
from tests.support.factory import make_instances, to_bytes
from tests.support.ports import free_port


def scu_for(modalities: dict[str, Modality], *, close_delay: float = 5, aet: str = "LUABROKER",
            transcode: bool = True) -> StoreScu:
    return StoreScu(NetworkRegistry(modalities), DicomOptions(default_aet=aet, association_close_delay=close_delay,
                                                              scu_timeout=5, transcode=transcode))


@pytest.fixture
def scus():
    """``scus(...)`` = ``scu_for``; every SCU is closed after the test."""
    made: list[StoreScu] = []

    def make(*args, **kwargs) -> StoreScu:
        made.append(scu_for(*args, **kwargs))
        return made[-1]

    yield make
    for scu in made:
        scu.close()


def encoded(ds: pydicom.Dataset, syntax: str) -> bytes:
    ds = pydicom.dcmread(BytesIO(to_bytes(ds)))
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_storescp_receives_the_instances_with_their_sop_instance_uids(storescp, scus):
    receiver = storescp("+xa", "+B")
    instances = make_instances(3, series=2)
    files = [to_bytes(ds) for ds in instances]
    scu = scus({"scp": Modality(receiver.aet, "127.0.0.1", receiver.port)})

    report = scu.store("scp", files)

    assert report.ok and report.sent == [ds.SOPInstanceUID for ds in instances]
    assert (report.remote_aet, report.local_aet) == ("STORESCP", "LUABROKER")
    received = receiver.wait_files(3)
    assert sorted(ds.SOPInstanceUID for ds in received) == sorted(ds.SOPInstanceUID for ds in instances)
    assert all(ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian for ds in received)


def test_the_calling_aet_is_the_given_one_else_the_modalitys_else_dicom_aet(recording_scp, scus):
    scp = recording_scp()
    scu = scus({"plain": Modality(scp.aet, "127.0.0.1", scp.port),
                "own": Modality(scp.aet, "127.0.0.1", scp.port, local_aet="MODALITYAET")}, close_delay=0)
    data = to_bytes(make_instances(1)[0])

    assert scu.store("plain", [data]).local_aet == "LUABROKER"
    assert scu.store("plain", [data], local_aet="GIVEN").local_aet == "GIVEN"
    assert scu.store("own", [data]).local_aet == "MODALITYAET"
    assert scu.store("own", [data], local_aet="GIVEN").local_aet == "GIVEN"

    assert scp.requested == ["LUABROKER", "GIVEN", "MODALITYAET", "GIVEN"]
    assert [aet for _, _, aet in scp.stored] == scp.requested


def test_a_real_orthanc_receives_the_instances_from_our_aet(orthanc_peer, scus):
    orthanc_peer.clear()
    instances = make_instances(2)
    scu = scus({"orthanc": Modality(orthanc_peer.aet, "127.0.0.1", orthanc_peer.dicom_port)})

    report = scu.store("orthanc", [to_bytes(ds) for ds in instances], local_aet="SENDER")

    assert report.ok
    stored = orthanc_peer.get("/instances", expand="")
    assert sorted(i["MainDicomTags"]["SOPInstanceUID"] for i in stored) == sorted(ds.SOPInstanceUID for ds in instances)
    metadata = orthanc_peer.get(f"/instances/{stored[0]['ID']}/metadata", expand="")
    assert metadata["RemoteAET"] == "SENDER" and metadata["CalledAET"] == orthanc_peer.aet


class TestAssociationReuse:
    def test_calls_within_the_close_delay_share_one_association(self, recording_scp, scus):
        scp = recording_scp()
        scu = scus({"scp": Modality(scp.aet, "127.0.0.1", scp.port)}, close_delay=0.5)
        batches = [[to_bytes(ds) for ds in make_instances(2)] for _ in range(3)]

        reports = [scu.store("scp", batch) for batch in batches]

        assert [r.associations_opened for r in reports] == [1, 0, 0]
        assert len(scp.requested) == 1 and len(scp.stored) == 6
        assert scu.open_associations() == 1

    def test_an_idle_association_is_released_after_the_delay(self, recording_scp, scus):
        scp = recording_scp()
        scu = scus({"scp": Modality(scp.aet, "127.0.0.1", scp.port)}, close_delay=0.3)
        scu.store("scp", [to_bytes(make_instances(1)[0])])

        deadline = time.monotonic() + 5
        while scp.released == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert scp.released == 1 and scu.open_associations() == 0

        assert scu.store("scp", [to_bytes(make_instances(1)[0])]).associations_opened == 1
        assert len(scp.requested) == 2

    def test_a_zero_delay_releases_at_the_end_of_each_call(self, recording_scp, scus):
        scp = recording_scp()
        scu = scus({"scp": Modality(scp.aet, "127.0.0.1", scp.port)}, close_delay=0)
        for _ in range(2):
            scu.store("scp", [to_bytes(make_instances(1)[0])])
        assert len(scp.requested) == 2 and scp.released == 2 and scu.open_associations() == 0

    def test_each_calling_aet_has_its_own_association(self, recording_scp, scus):
        scp = recording_scp()
        scu = scus({"scp": Modality(scp.aet, "127.0.0.1", scp.port)})
        data = to_bytes(make_instances(1)[0])
        for aet in ("A", "B", "A"):
            scu.store("scp", [data], local_aet=aet)
        assert scp.requested == ["A", "B"]

    def test_a_new_sop_class_reopens_with_both(self, recording_scp, scus):
        scp = recording_scp()
        scu = scus({"scp": Modality(scp.aet, "127.0.0.1", scp.port)})
        ct, mr = make_instances(1)[0], make_instances(1, base="MR_small.dcm")[0]

        assert scu.store("scp", iter([to_bytes(ct), to_bytes(mr)])).associations_opened == 2
        assert scu.store("scp", [to_bytes(ct), to_bytes(mr)]).associations_opened == 0  # both proposed now
        assert len(scp.requested) == 2

    def test_a_kept_association_the_peer_dropped_is_replaced(self, recording_scp, scus):
        scp = recording_scp()
        scu = scus({"scp": Modality(scp.aet, "127.0.0.1", scp.port)})
        scu.store("scp", [to_bytes(make_instances(1)[0])])
        for assoc in scp.server.active_associations:
            assoc.abort()
        time.sleep(0.2)

        report = scu.store("scp", [to_bytes(make_instances(1)[0])])

        assert report.ok and report.associations_opened == 1 and len(scp.requested) == 2


class TestTransferSyntax:
    def test_an_implicit_only_receiver_gets_a_transcoded_instance(self, storescp, scus):
        receiver = storescp("+xi")
        ds = make_instances(1)[0]
        scu = scus({"scp": Modality(receiver.aet, "127.0.0.1", receiver.port)})

        report = scu.store("scp", [to_bytes(ds)])

        assert report.ok and report.results[0].transfer_syntax == ImplicitVRLittleEndian
        [received] = receiver.wait_files(1)
        assert received.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        assert received.SOPInstanceUID == ds.SOPInstanceUID and received.PatientName == ds.PatientName
        assert received.PixelData == ds.PixelData

    def test_the_stored_syntax_is_kept_when_accepted(self, recording_scp, scus):
        scp = recording_scp()
        scu = scus({"scp": Modality(scp.aet, "127.0.0.1", scp.port)})
        with open(get_testdata_file("MR_small_RLE.dcm"), "rb") as rle:
            files = [rle.read(), encoded(make_instances(1)[0], DeflatedExplicitVRLittleEndian)]

        report = scu.store("scp", files)

        assert report.ok
        assert [syntax for _, syntax, _ in scp.stored] == [RLELossless, DeflatedExplicitVRLittleEndian]

    @pytest.mark.parametrize("source", ["MR_small_RLE.dcm", "deflated"])
    def test_compressed_and_deflated_instances_are_decoded_for_an_implicit_only_receiver(self, source, storescp, scus):
        receiver = storescp("+xi")
        if source == "deflated":
            original = make_instances(1)[0]
            data = encoded(original, DeflatedExplicitVRLittleEndian)
        else:
            pytest.importorskip("numpy", reason="decompressing pixel data needs numpy (pydicom's pixel handlers)")
            with open(get_testdata_file(source), "rb") as handle:
                data = handle.read()
            original = pydicom.dcmread(get_testdata_file(source))
        scu = scus({"scp": Modality(receiver.aet, "127.0.0.1", receiver.port)})

        report = scu.store("scp", [data])

        assert report.ok, report.failures
        [received] = receiver.wait_files(1)
        assert received.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        assert received.SOPInstanceUID == original.SOPInstanceUID
        assert received.Rows == original.Rows
        assert len(received.PixelData) == original.Rows * original.Columns * original.BitsAllocated // 8 \
            * original.get("SamplesPerPixel", 1)

    def test_an_instance_that_cannot_be_decoded_fails_alone(self, storescp, scus):
        receiver = storescp("+xi")
        broken = make_instances(1)[0]
        broken.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        broken.PixelData = encapsulate([b"\xff\xd8 not a JPEG stream \xff\xd9"])
        broken["PixelData"].VR = "OB"
        good = make_instances(1)[0]
        scu = scus({"scp": Modality(receiver.aet, "127.0.0.1", receiver.port)})

        report = scu.store("scp", [to_bytes(broken), to_bytes(good)])

        assert report.sent == [good.SOPInstanceUID]
        [failure] = report.failures
        assert failure.sop_instance_uid == broken.SOPInstanceUID and failure.status is None
        assert "cannot transcode" in failure.error and "JPEG Baseline" in failure.error
        with pytest.raises(DicomNetworkError, match="1 of 2 instances failed"):
            report.check()

    def test_transcoding_can_be_disabled_per_modality(self, storescp, scus):
        receiver = storescp("+xi")
        scu = scus({"scp": Modality(receiver.aet, "127.0.0.1", receiver.port, allow_transcoding=False)})
        report = scu.store("scp", [to_bytes(make_instances(1)[0])])
        assert not report.ok and "AllowTranscoding" in report.failures[0].error

    def test_transcoding_can_be_disabled_for_every_modality(self, storescp, scus):
        """``TranscodeDicomProtocol`` false, as Orthanc's ``StoreWithTranscoding``: sent as stored, or not."""
        receiver = storescp("+xi")
        scu = scus({"scp": Modality(receiver.aet, "127.0.0.1", receiver.port)}, transcode=False)
        report = scu.store("scp", [to_bytes(make_instances(1)[0])])
        assert not report.ok and "TranscodeDicomProtocol" in report.failures[0].error


class TestFailures:
    def test_a_receiver_that_is_down_raises_with_the_reason(self, scus):
        scu = scus({"down": Modality("DOWN", "127.0.0.1", free_port())})
        with pytest.raises(DicomNetworkError) as caught:
            scu.store("down", [to_bytes(make_instances(1)[0])])
        assert 'AET "DOWN"' in caught.value.details and "Connection refused" in caught.value.details
        assert caught.value.http_status == 500 and int(caught.value.code) == 9
        assert caught.value.report is not None and caught.value.report.results == []

    def test_an_association_aborted_during_a_c_store_raises(self, storescp, scus):
        receiver = storescp("+xa", "--abort-after")
        scu = scus({"scp": Modality(receiver.aet, "127.0.0.1", receiver.port)})
        with pytest.raises(DicomNetworkError, match="aborted") as caught:
            scu.store("scp", [to_bytes(ds) for ds in make_instances(2)])
        assert caught.value.report.results == []
        assert scu.open_associations() == 0

    def test_a_rejected_association_raises_with_the_reason(self, recording_scp, scus):
        scp = recording_scp(require_called_aet=True)
        scu = scus({"wrong": Modality("NOT-" + scp.aet, "127.0.0.1", scp.port)})
        with pytest.raises(DicomNetworkError, match="rejected.*Called AE title not recognised"):
            scu.store("wrong", [to_bytes(make_instances(1)[0])])

    def test_a_refused_instance_is_reported_with_its_status(self, recording_scp, scus):
        scp = recording_scp(status=0xA700)
        scu = scus({"scp": Modality(scp.aet, "127.0.0.1", scp.port)})
        report = scu.store("scp", [to_bytes(ds) for ds in make_instances(2)])
        assert [r.status for r in report.results] == [0xA700, 0xA700]
        with pytest.raises(DicomNetworkError, match="0xA700") as caught:
            report.check()
        assert caught.value.status == 0xA700

    def test_an_unreadable_file_is_reported_and_the_rest_sent(self, recording_scp, scus):
        scp = recording_scp()
        scu = scus({"scp": Modality(scp.aet, "127.0.0.1", scp.port)})
        report = scu.store("scp", [b"not dicom", to_bytes(make_instances(1)[0])])
        assert len(report.sent) == 1 and "not a DICOM file" in report.failures[0].error

    def test_an_unknown_modality_is_orthancs_inexistent_item(self, scus):
        from broker.errors import ErrorCode, OrthancError
        with pytest.raises(OrthancError) as caught:
            scus({}).store("nope", [])
        assert caught.value.code is ErrorCode.INEXISTENT_ITEM


def test_echo(recording_scp, scus):
    scp = recording_scp()
    scu = scus({"scp": Modality(scp.aet, "127.0.0.1", scp.port), "down": Modality("X", "127.0.0.1", free_port())})
    scu.echo("scp")
    assert scp.requested == ["LUABROKER"]
    with pytest.raises(DicomNetworkError, match="C-ECHO.*Connection refused"):
        scu.echo("down")
