"""Asynchronous modifications: ``ResourceModification``, ``SplitStudy`` and ``MergeStudy`` jobs, as Orthanc
runs them."""
from __future__ import annotations

from tests.support import dicom_samples as samples
from tests.support.waiting import job_succeeded


def test_split_and_merge_run_as_jobs_when_asked(luabroker) -> None:
    client = luabroker().http
    ct = client.post("/instances", content=samples.sample_file("CT_small.dcm")).json()
    mr = client.post("/instances", content=samples.sample_file("MR_small.dcm")).json()
    job = client.post(f"/studies/{ct['ParentStudy']}/split",
                      json={"Series": [ct["ParentSeries"]], "Replace": {"PatientName": "Hello"},
                            "Asynchronous": True}).json()
    info = job_succeeded(client, job)
    assert info["Type"] == "SplitStudy" and info["Content"]["InstancesCount"] == 1
    new_study = info["Content"]["TargetStudy"]
    assert client.get(f"/studies/{new_study}").json()["PatientMainDicomTags"]["PatientName"] == "Hello"
    assert ct["ID"] not in client.get("/instances").json()  # KeepSource is false by default
    job = client.post(f"/studies/{mr['ParentStudy']}/merge",
                      json={"Resources": [new_study], "KeepSource": True, "Synchronous": False}).json()
    info = job_succeeded(client, job)
    assert info["Type"] == "MergeStudy" and info["Content"]["TargetStudy"] == mr["ParentStudy"]
    assert len(client.get(f"/studies/{mr['ParentStudy']}/instances").json()) == 2
    assert new_study in client.get("/studies").json()


def test_resource_modification_runs_as_a_job_with_the_synchronous_answer(luabroker) -> None:
    client = luabroker().http
    ct = client.post("/instances", content=samples.sample_file("CT_small.dcm")).json()
    body = {"Replace": {"StudyDescription": "Async"}, "Force": True}
    synchronous = client.post(f"/studies/{ct['ParentStudy']}/modify", json=body).json()
    job = client.post(f"/studies/{ct['ParentStudy']}/modify", json={**body, "Asynchronous": True}).json()
    info = job_succeeded(client, job)
    assert info["Type"] == "ResourceModification"
    content = info["Content"]
    assert content.keys() == synchronous.keys() and content["IsAnonymization"] is False
    assert content["Type"] == "Study" and content["ID"] != ct["ParentStudy"]
    assert client.get(content["Path"]).json()["MainDicomTags"]["StudyDescription"] == "Async"
    assert ct["ID"] in client.get("/instances").json()  # KeepSource is true by default


def test_anonymization_job_takes_its_patient_name_when_submitted(luabroker) -> None:
    client = luabroker().http
    mr = client.post("/instances", content=samples.sample_file("MR_small.dcm")).json()
    job = client.post(f"/series/{mr['ParentSeries']}/anonymize",
                      json={"Synchronous": False, "KeepSource": False}).json()
    info = job_succeeded(client, job)
    content = info["Content"]
    assert info["Type"] == "ResourceModification" and content["IsAnonymization"] is True
    assert content["Type"] == "Series" and content["InstancesCount"] == 1
    patient = client.get(f"/patients/{content['PatientID']}").json()
    assert patient["MainDicomTags"]["PatientName"].startswith("Anonymized")
    anonymized = [instance["ID"] for instance in client.get(f"{content['Path']}/instances").json()]
    assert client.get("/instances").json() == anonymized  # KeepSource false: the source is gone
