"""REST resource endpoints, called through ``RestApi`` as the Lua door calls them."""
from __future__ import annotations

import io
import zipfile

import pytest

from broker.core.store import IncomingInstance, Store
from tests.support import dicom_samples as samples

CT = "f689ddd2-662f8fe1-8b18180d-ec2a2cee-937917af"
CT_SERIES = "93034833-163e42c3-bc9a428b-194620cf-2c5799e5"
CT_STUDY = "8a8cf898-ca27c490-d0c7058c-929d0581-2bbf104d"
CT_PATIENT = "fa558bce-587a86d3-ad0da9b3-9d043d9d-4f5c5718"


def test_post_instance_answers_success_then_already_stored(client) -> None:
    data = samples.sample_file("CT_small.dcm")
    assert client.post("/instances", data) == {
        "ID": CT, "ParentPatient": CT_PATIENT, "ParentSeries": CT_SERIES, "ParentStudy": CT_STUDY,
        "Path": f"/instances/{CT}", "Status": "Success"}
    assert client.post("/instances/", data)["Status"] == "AlreadyStored"


def test_post_instance_filtered_out_answers_200(client, store: Store) -> None:
    store.instance_filter = lambda incoming: False
    answer = client.post("/instances", samples.sample_file("CT_small.dcm"))
    assert answer["Status"] == "FilteredOut" and answer["ID"] == CT
    assert client.get("/instances") == []


def test_post_instance_keeps_the_request_origin(client, store: Store) -> None:
    seen: list[IncomingInstance] = []
    store.instance_filter = lambda incoming: seen.append(incoming) or True
    client.post("/instances", samples.sample_file("CT_small.dcm"))
    assert seen[0].origin.to_lua() == {"RequestOrigin": "RestApi", "RemoteIp": "127.0.0.1", "Username": ""}


@pytest.mark.parametrize("body", [b"not a DICOM file", b"", samples.sample_file("MR_truncated.dcm")])
def test_post_non_dicom_answers_400_with_a_message(client, body: bytes) -> None:
    answer = client.call("POST", "/instances", body)
    assert (answer.status, answer.kind, answer.orthanc_status) == (400, "error", 15)
    assert b"DICOM file" in answer.body
    assert client.get("/instances") == []


def test_post_file_without_uids_answers_404_inexistent_tag(client) -> None:
    answer = client.call("POST", "/instances", samples.sample_file("priv_SQ.dcm"))
    assert (answer.status, answer.orthanc_status) == (404, 21)


def test_post_zip_stores_each_dicom_entry_and_skips_the_rest(client) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a/ct.dcm", samples.sample_file("CT_small.dcm"))
        archive.writestr("readme.txt", "not DICOM")
        archive.writestr("mr.dcm", samples.sample_file("MR_small.dcm"))
    answers = client.post("/instances", buffer.getvalue())
    assert [a["Status"] for a in answers] == ["Success", "Success"] and answers[0]["ID"] == CT


def test_lists_and_expand(client) -> None:
    client.post("/instances", samples.sample_file("CT_small.dcm"))
    client.post("/instances", samples.sample_file("MR_small.dcm"))
    instances = client.get("/instances")
    assert instances[0] == CT and len(instances) == 2
    expanded = client.get("/instances", expand="")
    assert [i["ID"] for i in expanded] == instances and expanded[0]["Type"] == "Instance"
    assert client.get("/patients", since="1", limit="5") == [client.get("/patients")[1]]
    answer = client.call("GET", "/patients", limit="1")
    assert (answer.status, answer.orthanc_status) == (400, 8) and b'"since"' in answer.body


def test_resource_details_at_each_level(client) -> None:
    client.post("/instances", samples.sample_file("CT_small.dcm"))
    instance = client.get(f"/instances/{CT}")
    assert instance["ParentSeries"] == CT_SERIES and instance["IndexInSeries"] == 1
    assert instance["FileSize"] == len(samples.sample_file("CT_small.dcm"))
    series = client.get(f"/series/{CT_SERIES}")
    assert series["Instances"] == [CT] and series["Status"] == "Unknown" and series["ExpectedNumberOfInstances"] is None
    study = client.get(f"/studies/{CT_STUDY}")
    assert study["PatientMainDicomTags"]["PatientID"] == "1CT1" and "PatientID" not in study["MainDicomTags"]
    patient = client.get(f"/patients/{CT_PATIENT}")
    assert patient["Studies"] == [CT_STUDY] and patient["MainDicomTags"]["PatientName"] == "CompressedSamples^CT1"


def test_series_status_follows_expected_number_of_instances(client) -> None:
    files = samples.series_of(3, CardiacNumberOfImages="3")
    for data in files[:2]:
        answer = client.post("/instances", data)
    assert client.get(f"/series/{answer['ParentSeries']}")["Status"] == "Missing"
    client.post("/instances", files[2])
    series = client.get(f"/series/{answer['ParentSeries']}")
    assert (series["Status"], series["ExpectedNumberOfInstances"]) == ("Complete", 3)


def test_unknown_resource_answers_a_bare_404(client) -> None:
    client.post("/instances", samples.sample_file("CT_small.dcm"))
    for path in ("/instances/nope", f"/series/{CT}", "/patients/nope"):
        assert (client.call("GET", path).status, client.call("GET", path).kind) == (404, "bare")
    answer = client.call("GET", "/instances/nope/tags")
    assert (answer.status, answer.kind, answer.orthanc_status) == (404, "error", 17)


def test_instance_file_is_the_stored_bytes(client) -> None:
    data = samples.sample_file("CT_small.dcm")
    client.post("/instances", data)
    answer = client.call("GET", f"/instances/{CT}/file")
    assert answer.body == data and answer.content_type == "application/dicom"
    assert answer.headers["Content-Disposition"].endswith('.dcm"')


def test_tags_in_three_formats(client) -> None:
    client.post("/instances", samples.sample_file("CT_small.dcm"))
    full = client.get(f"/instances/{CT}/tags")
    assert full["0010,0010"] == {"Name": "PatientName", "Type": "String", "Value": "CompressedSamples^CT1"}
    simplified = client.get(f"/instances/{CT}/simplified-tags")
    assert client.get(f"/instances/{CT}/tags", simplify="") == simplified
    assert simplified["PatientName"] == "CompressedSamples^CT1"
    assert client.get(f"/instances/{CT}/tags", short="")["0010,0010"] == "CompressedSamples^CT1"


def test_metadata_endpoints(client) -> None:
    client.post("/instances", samples.sample_file("CT_small.dcm"))
    base = f"/instances/{CT}/metadata"
    assert client.get(base)[:3] == ["IndexInSeries", "ReceptionDate", "RemoteAET"]
    assert client.get(base, expand="")["Origin"] == "RestApi"
    assert client.get(f"{base}/IndexInSeries") == b"1" and client.get(f"{base}/1") == b"1"
    assert client.call("PUT", f"{base}/Sample", b"hello").status == 200
    assert client.get(f"{base}/1024") == b"hello"
    assert client.call("PUT", f"{base}/ReceptionDate", b"x").status == 403
    assert client.call("DELETE", f"{base}/Origin").status == 403
    assert client.call("DELETE", f"{base}/Sample").status == 200
    assert (client.call("DELETE", f"{base}/Sample").orthanc_status) == 17
    assert (client.call("GET", f"{base}/Sample").status, client.call("GET", f"{base}/Sample").kind) == (404, "bare")
    assert client.call("GET", f"{base}/Foo").orthanc_status == 7
    assert client.call("PUT", "/instances/nope/metadata/Sample", b"x").orthanc_status == 17


def test_children_and_parents(client) -> None:
    client.post("/instances", samples.sample_file("CT_small.dcm"))
    assert [s["ID"] for s in client.get(f"/patients/{CT_PATIENT}/studies")] == [CT_STUDY]
    assert [s["ID"] for s in client.get(f"/patients/{CT_PATIENT}/series")] == [CT_SERIES]
    assert [i["ID"] for i in client.get(f"/patients/{CT_PATIENT}/instances")] == [CT]
    assert [i["ID"] for i in client.get(f"/studies/{CT_STUDY}/instances")] == [CT]
    assert client.get(f"/instances/{CT}/patient")["ID"] == CT_PATIENT
    assert client.get(f"/instances/{CT}/study")["ID"] == CT_STUDY
    assert client.get(f"/instances/{CT}/series")["ID"] == CT_SERIES
    assert client.get(f"/series/{CT_SERIES}/patient")["Type"] == "Patient"
    assert client.get(f"/studies/{CT_STUDY}/patient")["ID"] == CT_PATIENT
    assert client.call("GET", "/series/nope/study").orthanc_status == 17


def test_delete_answers_the_remaining_ancestor(client) -> None:
    first, second = samples.series_of(2)
    a, b = client.post("/instances", first), client.post("/instances", second)
    answer = client.call("DELETE", f"/instances/{a['ID']}")
    assert answer.json() == {"RemainingAncestor": {"ID": a["ParentSeries"], "Path": f"/series/{a['ParentSeries']}",
                                                   "Type": "Series"}}
    assert client.call("DELETE", f"/instances/{b['ID']}").json() == {"RemainingAncestor": None}
    assert client.get("/patients") == []
    assert client.call("DELETE", f"/instances/{b['ID']}").kind == "bare"


def test_wrong_method_answers_405(client) -> None:
    answer = client.call("PUT", "/instances")
    assert (answer.status, answer.kind) == (405, "bare")
