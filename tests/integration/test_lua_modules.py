"""``require`` of pure-Lua modules from the folders of ``LuaModulesPath`` (issue 13, "Pure-Lua modules"),
on a real server with real sandbox processes: the broker reads the modules and sends one as text when
a script first requires it; the process keeps no file access, so nothing else can be required, a
native module or a precompiled chunk is refused with a clear error, and a changed module is a new
version of the scripts."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.factory import make_instances, to_bytes

DICOMUTIL = """
local M = {}
function M.describe(tags)
  return (tags.PatientID or '?') .. '/' .. (tags.Modality or '?')
end
loads_of_dicomutil = (loads_of_dicomutil or 0) + 1  -- a global of the script environment
return M
"""

SCRIPT = """
local util = require('dicomutil')
function ReceivedInstanceFilter(tags, origin, info)
  return util.describe(tags) ~= 'REFUSED/CT'
end
"""


def module_folder(root: Path) -> Path:
    folder = root / "lua-modules"
    (folder / "text").mkdir(parents=True)
    (folder / "dicomutil.lua").write_text(DICOMUTIL)
    (folder / "text" / "init.lua").write_text("return {name = 'text'}")
    (folder / "text" / "upper.lua").write_text("return function(s) return s:upper() end")
    (folder / "native.so").write_bytes(b"\x7fELF not really")
    lua = shutil.which("lua5.4")
    assert lua is not None
    compiled = subprocess.run([lua, "-e", "io.write(string.dump(function() return 1 end))"], capture_output=True,
                              check=True).stdout
    (folder / "compiled.lua").write_bytes(compiled)
    return folder


def execute(server: Any, script: str) -> str:
    answer = server.http.post("/tools/execute-script", content=script)
    assert answer.status_code == 200, answer.text
    return str(answer.text)


@pytest.fixture
def with_modules(luabroker: Any, tmp_path: Path) -> Any:
    folder = module_folder(tmp_path)
    return luabroker({"main.lua": SCRIPT}, LuaModulesPath=[str(folder)], ExecuteLuaEnabled=True), folder


def test_a_module_is_loaded_once_per_process_in_the_script_environment(with_modules: Any) -> None:
    server, _ = with_modules
    lines = execute(server, "local util = require('dicomutil') "
                            "print(util.describe({PatientID = 'P1', Modality = 'CT'})) "
                            "print(util == require('dicomutil')) print(loads_of_dicomutil) "
                            "print(require('text').name) print(require('text.upper')('abc'))").splitlines()
    assert lines == ["P1/CT", "true", "1", "text", "ABC"]  # main.lua had required it once already
    # The filter process required it too, at its own load of main.lua.
    refused, kept = make_instances(2)
    refused.PatientID = "REFUSED"
    assert server.http.post("/instances", content=to_bytes(refused)).json()["Status"] == "FilteredOut"
    assert server.http.post("/instances", content=to_bytes(kept)).json()["Status"] == "Success"


@pytest.mark.parametrize("name, error", [
    ("'os'", "module 'os' not found: require loads the Lua files of LuaModulesPath only"),
    ("'native'", "module 'native' is a binary module ("),
    ("'compiled'", "module 'compiled' ("),
    ("'../dicomutil'", "module '../dicomutil' not found"),
    ("'/etc/passwd'", "module '/etc/passwd' not found"),
    ("42", "bad argument #1 to 'require' (string expected, got number)"),
])
def test_what_is_not_a_lua_module_of_the_folders_fails_clearly(with_modules: Any, name: str, error: str) -> None:
    server, _ = with_modules
    ok, message = execute(server, f"print(pcall(require, {name}))").rstrip("\n").split(", ", 1)
    assert ok == "false" and error in message
    if name == "'compiled'":
        assert "precompiled binary chunk: only Lua source is loaded" in message


def test_a_changed_module_is_a_new_version_that_a_reload_loads(with_modules: Any) -> None:
    server, folder = with_modules
    before = server.http.get("/lua/status").json()["Version"]
    assert server.http.post("/lua/reload").json()["Changed"] is False
    (folder / "dicomutil.lua").write_text(DICOMUTIL.replace("'/'", "'|'"))
    assert server.http.post("/lua/reload").json()["Changed"] is True
    assert server.http.get("/lua/status").json()["Version"] != before
    assert execute(server, "print(require('dicomutil').describe({PatientID = 'P'}))") == "P|?\n"


def test_without_modules_require_fails_clearly(luabroker: Any) -> None:
    server = luabroker(ExecuteLuaEnabled=True)
    assert "not found: require loads the Lua files of LuaModulesPath only (none is configured)" in execute(
        server, "print(pcall(require, 'dicomutil'))")


def test_a_modules_path_that_is_no_folder_stops_the_start(luabroker: Any, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="'LuaModulesPath' names .*missing.*, which is not a folder"):
        luabroker(LuaModulesPath=[str(tmp_path / "missing")])
