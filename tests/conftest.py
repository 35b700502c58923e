"""The shared fixtures, registered once for every test package (they live in ``tests/support``)."""
from __future__ import annotations

import tempfile
from typing import Iterator

import pytest

# Before the plugins below are imported, so that their asserts explain themselves like a test's.
pytest.register_assert_rewrite("tests.support")

pytest_plugins = ["tests.support.orthanc_peer", "tests.support.receivers", "tests.support.server"]


@pytest.fixture(scope="session", autouse=True)
def worker_tmpdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A temporary directory per pytest process, as ``TMPDIR`` for this process and its children.

    Sandboxes, Orthanc peers and uploads make their files under ``TMPDIR``; tests that list what is
    left there (``sandbox_workdirs``) must not see another xdist worker's files.
    """
    directory = str(tmp_path_factory.mktemp("tmp", numbered=False))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", directory)
        patch.setattr(tempfile, "tempdir", directory)
        yield
