"""Each built-in is declared once in Lua and implemented once in Python: both sides must agree, and
the Lua API reference must describe every built-in and callback."""
from __future__ import annotations

import re
from pathlib import Path

from broker.scripting.builtins import BUILTINS
from broker.scripting.callbacks import CALLBACKS
from sandbox import Sandbox, SandboxConfig

DOCS = Path(__file__).resolve().parents[3] / "docs" / "lua-api.md"


def test_lua_stubs_and_python_builtins_list_the_same_names():
    sandbox = Sandbox(SandboxConfig(name="registry", role="main"), lambda name, args, info: None)
    sandbox.start()
    try:
        assert sandbox.builtin_names() == set(BUILTINS)
    finally:
        sandbox.stop()


def test_lua_api_reference_documents_every_builtin_and_callback():
    headings = set(re.findall(r"^#+ `?([A-Za-z_]+)", DOCS.read_text(), re.MULTILINE))
    missing = (set(BUILTINS) | set(CALLBACKS)) - headings
    assert not missing, f"docs/lua-api.md has no section for {sorted(missing)}"
