"""``/instances/{id}/pdf`` compared with a real Orthanc: the documents of Encapsulated PDF instances
(the pad byte dropped, or a last byte that is no newline), and the instances that are none."""
from __future__ import annotations

from pydicom.dataelem import DataElement

from tests.support import dicom_samples as samples
from tests.support.orthanc_peer import OrthancPeer

from .test_orthanc_parity import our_call, peer_call

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF"


def encapsulated(document: bytes | None, mime: str | None = "application/pdf",
                 sop_class: str = ENCAPSULATED_PDF) -> bytes:
    """An instance holding ``document`` (written as is: pydicom pads an odd length with a NUL)."""
    ds = samples.minimal(SOPClassUID=sop_class, Modality="DOC")
    if mime is not None:
        ds.MIMETypeOfEncapsulatedDocument = mime
    if document is not None:
        ds[0x00420011] = DataElement(0x00420011, "OB", document)
    return samples.encode(ds)


def test_pdf_answers_as_orthanc(orthanc_peer: OrthancPeer, client) -> None:
    peer = orthanc_peer
    peer.clear()
    files = [
        encapsulated(PDF + b"\n"),            # odd: a NUL pad byte, dropped
        encapsulated(PDF + b"\r\n"),          # even, ends in a newline: kept whole
        encapsulated(PDF + b"  "),            # even, last byte no newline: dropped too
        encapsulated(b""),                    # empty: an empty PDF
        encapsulated(None),                   # no document
        encapsulated(PDF + b"\n", mime="text/plain"),
        encapsulated(PDF + b"\n", mime=None),
        encapsulated(PDF + b"\n", sop_class="1.2.840.10008.5.1.4.1.1.104.2"),
        samples.sample_file("CT_small.dcm"),
        samples.implicit(samples.minimal(SOPClassUID=ENCAPSULATED_PDF, MIMETypeOfEncapsulatedDocument="application/pdf",
                                         EncapsulatedDocument=PDF + b"\r\n")),
    ]
    documents = 0
    for data in files:
        instance = client.post("/instances", data)["ID"]
        assert peer.upload(data)["ID"] == instance
        path = f"/instances/{instance}/pdf"
        ours, theirs = our_call(client, "GET", path), peer_call(peer, "GET", path)
        assert ours == theirs, path
        if ours[0] == 200:
            answer, expected = client.call("GET", path), peer.client.get(path)
            assert (answer.body, answer.content_type) == (expected.content, expected.headers["content-type"])
            documents += 1
    assert documents == 5
    assert our_call(client, "GET", "/instances/nope/pdf") == peer_call(peer, "GET", "/instances/nope/pdf")
