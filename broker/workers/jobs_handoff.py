"""Asynchronous jobs submitted in a worker that is not the coordinator go to the coordinator's engine.

The jobs registry lives in the coordinator (``GET /jobs`` is served there, the saved jobs are its),
so a job that a worker creates (an asynchronous C-MOVE with ``SynchronousCMove: false``, a filter
script's ``RestApiPost`` with ``Asynchronous``) is handed over as its serialized form, the form
``jobs.sqlite`` keeps: the coordinator rebuilds it (``JOB_TYPES[type].unserialize``), submits it and
answers its id. A synchronous job runs in the worker that waits for it, as before.

The coordinator listens on a Unix stream socket of the abstract namespace named after the storage
directory, and serves only another worker of this server (``local_socket.is_sibling``); with the index
in PostgreSQL, on a TCP port that the other nodes find in the index (``local_socket.coordinator_address``).
"""
from __future__ import annotations

import logging
from typing import Any

from broker.config import Config
from broker.errors import ErrorCode, OrthancError
from broker.jobs import JOB_TYPES, JobsEngine
from broker.jobs.model import Job
from broker.workers.local_socket import Endpoint, RequestServer, ask, coordinator_address

log = logging.getLogger("luabroker.workers")

#: The name of the coordinator's endpoint (``local_socket.coordinator_address``).
SERVICE = "jobs"

#: How long a worker tries to reach a coordinator (one is being elected after the last one died).
HANDOFF_TIMEOUT_S = 30.0


class JobsHandoff:
    """A worker's end (``JobsEngine.handoff``): hands an asynchronous job to the coordinator and
    returns the id the coordinator gave it."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def __call__(self, job: Job, priority: int) -> str:
        request = {"Type": job.type, "Content": job.serialize(), "Priority": priority}
        try:
            answer = ask(self.endpoint, request, HANDOFF_TIMEOUT_S, patience=HANDOFF_TIMEOUT_S)
        except ConnectionRefusedError:  # no coordinator came up in time
            raise OrthancError(ErrorCode.INTERNAL_ERROR, "No coordinator process to run the job; try again") from None
        except (OSError, ValueError) as exc:
            raise OrthancError(ErrorCode.INTERNAL_ERROR, f"Cannot hand the job to the coordinator: {exc}") from exc
        if "ID" not in answer:
            raise OrthancError(ErrorCode.INTERNAL_ERROR, f"The coordinator refused the job: {answer.get('Error')}")
        log.info("%s job handed to the coordinator: %s", job.type, answer["ID"])
        return str(answer["ID"])


class JobsListener(RequestServer):
    """The coordinator's end: submits the jobs that the other workers hand over."""

    def __init__(self, config: Config, engine: JobsEngine) -> None:
        super().__init__(coordinator_address(config, SERVICE), "jobs-handoff", HANDOFF_TIMEOUT_S)
        self.engine = engine

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            job = JOB_TYPES[request["Type"]].unserialize(request["Content"])
            return {"ID": self.engine.submit(job, int(request["Priority"]))}
        except (OrthancError, KeyError, ValueError, TypeError) as exc:
            return {"Error": str(exc)}
