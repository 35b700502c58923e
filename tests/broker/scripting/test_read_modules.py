"""How ``read_modules`` finds the modules of ``LuaModulesPath`` (``broker.scripting.version``): in Lua's
own search order, and in the version's digest."""
from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import ConfigError
from broker.scripting.version import read_modules, sources_digest
from sandbox import ScriptSource


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_first_folder_wins_then_a_lua_file_then_init_then_a_binary(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    write(first / "a" / "init.lua", "return 'a/init'")
    write(second / "a.lua", "return 'second a'")  # a later folder: a/init.lua of the first one wins
    write(first / "b.lua", "return 'b'")
    write(first / "b" / "init.lua", "return 'b/init'")  # ?.lua before ?/init.lua
    write(first / "c.so", "ELF")
    write(second / "c.lua", "return 'c'")  # the first folder's binary module still wins: refused
    write(first / "d" / "e.lua", "return 'd.e'")
    write(first / ".hidden" / "x.lua", "return 'x'")
    write(first / "notes.txt", "not a module")
    found = {module.name: module for module in read_modules([first, second], tmp_path)}
    assert sorted(found) == ["a", "b", "c", "d.e"]
    assert found["a"].source == b"return 'a/init'" and found["a"].path == "first/a/init.lua"
    assert found["b"].source == b"return 'b'"
    assert found["c"].source is None and found["c"].path == "first/c.so"
    assert found["d.e"].source == b"return 'd.e'"


def test_a_module_is_part_of_the_versions_digest(tmp_path: Path) -> None:
    scripts = (ScriptSource("main.lua", b"x = 1"),)
    write(tmp_path / "m" / "util.lua", "return 1")
    before = sources_digest(scripts, read_modules([tmp_path / "m"], tmp_path))
    assert before != sources_digest(scripts)  # the scripts alone: the digest of a server without modules
    write(tmp_path / "m" / "util.lua", "return 2")
    assert sources_digest(scripts, read_modules([tmp_path / "m"], tmp_path)) != before


def test_a_path_that_is_no_folder_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "file.lua").write_text("")
    with pytest.raises(ConfigError, match="which is not a folder"):
        read_modules([tmp_path / "file.lua"], tmp_path)
