"""The one way a test waits for a thread, a process or a server to get somewhere: poll a condition."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05,
               message: str = "condition") -> Any:
    """Poll ``condition()`` until it is truthy and return its value; fail the test after ``timeout`` s.

    The timeout is generous because it costs nothing when the condition comes true, and a loaded machine
    (parallel workers on two cores) can be several times slower than a developer's laptop.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message} (last value: {value!r})")
        time.sleep(interval)


def job_succeeded(http: Any, job: dict[str, Any]) -> dict[str, Any]:
    """Wait for the job a REST call submitted (its answer is ``{"ID", "Path"}``) to end, check that it
    succeeded, and return ``GET /jobs/{id}``."""
    assert job["Path"] == f"/jobs/{job['ID']}" and sorted(job) == ["ID", "Path"]
    wait_until(lambda: http.get(job["Path"]).json()["State"] in ("Success", "Failure"), message="the job's end")
    info = http.get(job["Path"]).json()
    assert info["State"] == "Success", info
    return info
