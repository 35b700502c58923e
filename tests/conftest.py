"""The shared fixtures, registered once for every test package (they live in ``tests/support``)."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

# Before the plugins below are imported, so that their asserts explain themselves like a test's.
pytest.register_assert_rewrite("tests.support")

pytest_plugins = ["tests.support.orthanc_peer", "tests.support.postgres", "tests.support.process",
                  "tests.support.receivers", "tests.support.s3", "tests.support.server"]


@pytest.fixture(scope="session", autouse=True)
def worker_tmpdir() -> Iterator[None]:
    """A temporary directory per pytest process, as ``TMPDIR`` for this process and its children.

    Sandboxes, Orthanc peers and uploads make their files under ``TMPDIR``; tests that list what is
    left there (``sandbox_workdirs``) must not see another xdist worker's (or another run's) files.
    It is made in the system's temporary directory, not in pytest's basetemp: the sandboxes run as
    ``nobody``, who must be able to pass through it (basetemp is private to its owner).
    """
    directory = tempfile.mkdtemp(prefix="luabroker-tests-")
    os.chmod(directory, 0o711)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("TMPDIR", directory)
            patch.setattr(tempfile, "tempdir", directory)
            yield
    finally:
        shutil.rmtree(directory, ignore_errors=True)
