"""``MaximumStorageMode: Reject`` (Orthanc 1.11; the Orthanc 1.10.1 peer does not have it): an instance
that would pass a storage limit is refused, over REST and C-STORE, and nothing stored is recycled."""
from __future__ import annotations

from typing import Any

import pytest

from broker.config import Config, ConfigError
from tests.support.factory import make_instances, to_bytes


def patient_ids(server: Any) -> list[str]:
    return sorted(server.http.get(f"/patients/{patient}").json()["MainDicomTags"]["PatientID"]
                  for patient in server.http.get("/patients").json())


def test_reject_refuses_what_would_pass_the_limit_and_recycles_nothing(luabroker: Any) -> None:
    server = luabroker(MaximumPatientCount=1, MaximumStorageMode="Reject")
    first, more_of_first = make_instances(2, patient_id="FIRST")
    assert server.http.post("/instances", content=to_bytes(first)).status_code == 200
    refused = server.http.post("/instances", content=to_bytes(make_instances(1, patient_id="SECOND")[0]))
    assert (refused.status_code, refused.json()["OrthancStatus"]) == (500, 19)
    assert "MaximumStorageMode is Reject" in refused.json()["Details"]
    assert server.c_store(make_instances(1, patient_id="THIRD")) == [0xA700]
    assert server.c_store([more_of_first]) == [0x0000]  # the same patient passes no limit
    assert patient_ids(server) == ["FIRST"]
    assert len(server.http.get("/instances").json()) == 2


def test_recycle_stays_the_default(luabroker: Any) -> None:
    server = luabroker(MaximumPatientCount=1)
    for patient in ("FIRST", "SECOND"):
        assert server.http.post("/instances", content=to_bytes(make_instances(1, patient_id=patient)[0])).is_success
    assert patient_ids(server) == ["SECOND"]


def test_another_mode_is_a_configuration_error(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="MaximumStorageMode"):
        Config.from_json({"MaximumStorageMode": "Delete"}, tmp_path)
