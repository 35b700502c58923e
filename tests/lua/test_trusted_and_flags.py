"""The shim's --trusted and --max-frame flags, and the rule that every module keeps private copies."""
from __future__ import annotations

import re
import subprocess

import pytest

from tests.lua.shim_driver import LUA, RUNTIME


def shown(shim, expression: str) -> str:
    (line,) = shim.run(f"print({expression})")
    return line


@pytest.mark.parametrize("name", ["io.open", "io.lines", "io.close", "io.popen", "io.tmpfile", "io.type",
                                  "os.execute", "os.getenv", "os.remove", "os.rename", "os.tmpname",
                                  "os.clock", "os.time"])
def test_trusted_scripts_get_io_and_os(start_shim, name):
    shim = start_shim("--trusted")
    assert shim.ready["trusted"] is True
    assert shown(shim, f"type({name})") == "function"


@pytest.mark.parametrize("name", ["io.read", "io.write", "io.input", "io.output", "io.stdin", "io.stdout",
                                  "io.stderr", "os.exit", "os.setlocale", "debug", "package",
                                  "dofile", "loadfile", "string.dump"])
def test_trusted_scripts_still_lack_what_would_break_the_shim(start_shim, name):
    shim = start_shim("--trusted")
    assert shown(shim, f"{name} == nil") == "true"


def test_trusted_io_needs_explicit_files_and_hides_the_file_metatable(start_shim, tmp_path):
    shim = start_shim("--trusted")
    path = tmp_path / "out.txt"
    lines = shim.run(f"local f = assert(io.open('{path}', 'w')) f:write('hello') io.close(f) "
                     f"for line in io.lines('{path}') do print(line) end "
                     "print(pcall(io.lines)) print(pcall(io.close)) print(getmetatable(io.tmpfile()))")
    assert lines[0] == "hello"
    assert lines[1].startswith("false, ") and "file name is required" in lines[1]
    assert lines[2].startswith("false, ") and "a file is required" in lines[2]
    assert lines[3] == "false"
    assert shim.run("print(io.popen('echo from a shell'):read('l'))") == ["from a shell"]


def test_untrusted_is_the_default(shim):
    assert shim.ready["trusted"] is False
    assert shown(shim, "io == nil and os.execute == nil") == "true"


def test_max_frame_flag_caps_results(start_shim):
    shim = start_shim("--max-frame=100000")
    shim.load("function Big() return ('x'):rep(200000) end function Small() return ('x'):rep(50000) end")
    outcome = shim.call("Big")
    assert not outcome.ok and outcome.value.startswith("the result is too large: ")
    assert "frame limit of 98976 bytes" in outcome.value  # 100000 minus the envelope's share
    assert shim.call("Small").value == {"defined": True, "value": "x" * 50000}


@pytest.mark.parametrize("flag", ["--max-frame=4000", "--max-frame=x", "--trusted=1"])
def test_bad_flags_exit_2(flag):
    result = subprocess.run([LUA, "-E", str(RUNTIME / "shim.lua"), flag], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=10)
    assert result.returncode == 2 and "usage:" in result.stderr


def test_every_module_uses_private_copies_only():
    """No function of the runtime reads a global when it runs: the shim empties the real globals after
    start-up, so a runtime read would fail (or find something a script put there)."""
    for module in sorted(RUNTIME.glob("*.lua")):
        listing = subprocess.run(["luac5.4", "-p", "-l", "-l", str(module)], capture_output=True, text=True,
                                 check=True).stdout
        function = ""
        for line in listing.splitlines():
            if re.match(r"^(main|function) <", line):
                function = line
            elif re.search(r"[GS]ETTABUP.*; _ENV ", line) and not function.startswith("main"):
                pytest.fail(f"{module.name}: {function.split('(')[0].strip()} reads a global at run time: {line}")
