"""The children must read the shim wherever the repository was cloned (CI clones under /root)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from sandbox import Sandbox, SandboxConfig
from sandbox.process import DEFAULT_SHIM
from sandbox.runtime import readable_shim

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="children run as another uid only when we are root")


@pytest.fixture
def private_runtime(tmp_path: Path) -> Path:
    """A copy of lua-runtime/ below a directory that only root may enter."""
    closed = tmp_path / "closed"
    shutil.copytree(Path(DEFAULT_SHIM).parent, closed / "lua-runtime")
    closed.chmod(0o700)
    return closed / "lua-runtime" / "shim.lua"


def test_shim_below_a_private_directory_is_staged_readable_by_everyone(private_runtime):
    staged = Path(readable_shim(str(private_runtime)))
    assert staged != private_runtime
    assert staged.read_bytes() == private_runtime.read_bytes()
    for path in (staged.parent, *staged.parent.iterdir()):
        assert path.stat().st_uid == 0 and path.stat().st_mode & 0o004 and not path.stat().st_mode & 0o022
    assert readable_shim(str(private_runtime)) == str(staged)  # staged once per broker process


def test_sandbox_starts_from_a_private_checkout_as_nobody(private_runtime):
    sandbox = Sandbox(SandboxConfig(name="private", role="main", shim=str(private_runtime)), lambda *a: None)
    sandbox.start()
    try:
        assert sandbox.execute("print(1 + 1)") == ["2"]
    finally:
        sandbox.stop()

