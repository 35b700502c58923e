"""``SplitStudy`` and ``MergeStudy`` jobs: the asynchronous form of ``/studies/{id}/split`` and
``/merge`` (``broker.core.restructure``), done in one step; ``run_now`` is the synchronous form."""
from __future__ import annotations

from typing import Any

from broker.core.origin import Origin
from broker.core.restructure import merge_study, split_study
from broker.jobs.model import Job, JobContext, StepResult, job_type
from broker.services import Services


class _StudyJob(Job):
    def __init__(self, study: str, options: dict[str, Any], origin: dict[str, Any]) -> None:
        self.study = study
        self.options = options
        self.origin = origin
        self.result: dict[str, Any] = {"Description": "REST API", "InstancesCount": 0, "FailedInstancesCount": 0}
        self.done = False

    def run(self, services: Services) -> dict[str, Any]:
        raise NotImplementedError

    def step(self, context: JobContext) -> StepResult:
        self.result = self.run(context.services)
        self.done = True
        return StepResult.success()

    def run_now(self, services: Services) -> dict[str, Any]:
        """The synchronous form: the job's content, without the engine."""
        return self.run(services)

    def progress(self) -> float:
        return 1.0 if self.done else 0.0

    def content(self) -> dict[str, Any]:
        return dict(self.result)

    def serialize(self) -> dict[str, Any]:
        return {"Study": self.study, "Options": self.options, "Origin": self.origin}

    @classmethod
    def unserialize(cls, data: dict[str, Any]) -> Job:
        return cls(data["Study"], data["Options"], data["Origin"])


@job_type
class SplitStudyJob(_StudyJob):
    type = "SplitStudy"

    def run(self, services: Services) -> dict[str, Any]:
        o = self.options
        return split_study(services.store, self.study, o["Series"], o["Instances"], o["Replace"], o["Remove"],
                           o["KeepSource"], Origin.from_dict(self.origin)).to_json()


@job_type
class MergeStudyJob(_StudyJob):
    type = "MergeStudy"

    def run(self, services: Services) -> dict[str, Any]:
        o = self.options
        return merge_study(services.store, self.study, o["Resources"], o["KeepSource"],
                           Origin.from_dict(self.origin)).to_json()
