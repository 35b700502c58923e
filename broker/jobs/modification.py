"""``ResourceModification`` jobs: ``/{level}/{id}/modify|anonymize`` and ``/tools/bulk-modify|anonymize``
with ``"Asynchronous": true`` (``broker.core.resource_modification``). The body was checked when the job
was submitted; the job reads it again, with the ``Anonymized<N>`` name taken then. ``level`` is the
level of the modification; a single-resource job's content names one new resource of that level, a
bulk job's (``bulk=True``) lists every new resource."""
from __future__ import annotations

from typing import Any

from broker.core.anonymize import anonymization_request
from broker.core.levels import Level
from broker.core.modify_request import ModifyRequest
from broker.core.origin import Origin
from broker.core.resource_modification import JOB_DESCRIPTION, run_resource_modification
from broker.jobs.model import Job, JobContext, StepResult, job_type


@job_type
class ResourceModificationJob(Job):
    type = "ResourceModification"

    def __init__(self, level: Level, anonymize: bool, body: dict[str, Any], patient_name: str | None,
                 instances: list[str], keep_source: bool, transcode: str | None, origin: dict[str, Any],
                 bulk: bool = False, permissive: bool = False) -> None:
        self.level, self.anonymize, self.body, self.patient_name = level, anonymize, body, patient_name
        self.instances, self.keep_source, self.transcode, self.origin = instances, keep_source, transcode, origin
        self.bulk, self.permissive = bulk, permissive
        self.result: dict[str, Any] = {"Description": JOB_DESCRIPTION, "FailedInstancesCount": 0,
                                       "InstancesCount": len(instances), "IsAnonymization": anonymize}
        if bulk:
            self.result["Resources"] = []
        self.done = False

    def step(self, context: JobContext) -> StepResult:
        name = self.patient_name
        request = (anonymization_request(self.body, next_patient_name=(lambda: name) if name else None)
                   if self.anonymize else ModifyRequest.from_json(self.body, self.level))
        self.result = run_resource_modification(
            context.services.store, request, self.instances, origin=Origin.from_dict(self.origin),
            output_level=None if self.bulk else self.level, is_anonymization=self.anonymize,
            keep_source=self.keep_source, transcode=self.transcode, permissive=self.permissive)
        self.done = True
        return StepResult.success()

    def progress(self) -> float:
        return 1.0 if self.done else 0.0

    def content(self) -> dict[str, Any]:
        return dict(self.result)

    def serialize(self) -> dict[str, Any]:
        return {"Level": self.level.label, "Anonymize": self.anonymize, "Body": self.body,
                "PatientName": self.patient_name, "Instances": self.instances, "KeepSource": self.keep_source,
                "Transcode": self.transcode, "Origin": self.origin, "Bulk": self.bulk, "Permissive": self.permissive}

    @classmethod
    def unserialize(cls, data: dict[str, Any]) -> ResourceModificationJob:
        return cls(Level.from_label(data["Level"]), bool(data["Anonymize"]), data["Body"], data.get("PatientName"),
                   list(data["Instances"]), bool(data["KeepSource"]), data.get("Transcode"), data["Origin"],
                   bool(data.get("Bulk", False)), bool(data.get("Permissive", False)))
