"""The script environment: what is removed, what is wrapped, and the Orthanc globals semantics."""
from __future__ import annotations

import pytest

REMOVED = ["io", "os.execute", "os.exit", "os.getenv", "os.remove", "os.rename", "os.tmpname", "os.setlocale",
           "dofile", "loadfile", "package", "debug", "string.dump", "warn", "('').dump"]


def shown(shim, expression: str) -> str:
    (line,) = shim.run(f"print({expression})")
    return line


@pytest.mark.parametrize("name", REMOVED)
def test_removed_item_is_nil(shim, name):
    assert shown(shim, f"{name} == nil") == "true"


@pytest.mark.parametrize("name", ["os.clock", "os.date", "os.difftime", "os.time", "string.format", "table.sort",
                                  "math.floor", "utf8.char", "coroutine.wrap", "pcall", "xpcall", "load",
                                  "setmetatable", "getmetatable", "rawset", "select", "tostring", "collectgarbage",
                                  "require",
                                  "PrintRecursive", "ParseJson", "DumpJson", "RestApiGet", "RestApiPost",
                                  "RestApiPut", "RestApiDelete", "GetOrthancConfiguration"])
def test_allowed_item_is_a_function(shim, name):
    assert shown(shim, f"type({name})") == "function"


def test_load_refuses_binary_chunks(shim):
    assert shown(shim, "select(2, load('\\27Lua\\84\\0'))") == (
        "attempt to load a binary chunk (mode is 't')")


def test_load_refuses_function_readers(shim):
    outcome = shim.load("load(function() return nil end)")
    assert not outcome.ok
    assert "string expected, got function" in outcome.value


def test_load_compiles_in_the_script_environment(shim):
    assert shim.run("print(load('return io')()) load('made_by_load = 1')() print(made_by_load)") == ["nil", "1"]


def test_load_honours_an_explicit_environment_table(shim):
    assert shown(shim, "load('return x', 'chunk', 't', {x = 'own'})()") == "own"


def test_string_metatable_is_hidden_and_methods_work(shim):
    assert shim.run("print(getmetatable('')) print(('abc'):upper())") == ["false", "ABC"]
    assert not shim.load("getmetatable('').__index.upper = nil").ok


@pytest.mark.parametrize("library", ["string", "table", "math", "os", "utf8", "coroutine"])
def test_libraries_are_read_only(shim, library):
    outcome = shim.load(f"{library}.injected = print")
    assert not outcome.ok
    assert f"{library} is read-only" in outcome.value


def test_rawset_on_a_library_proxy_stays_in_the_proxy(shim):
    # The script can shadow a name in its own proxy; the shim's own conversions use private copies.
    lines = shim.run("rawset(string, 'format', function() return 'evil' end) "
                     "print(string.format('%d', 1)) print(('%d'):format(1)) print(DumpJson(0.5))")
    assert lines == ["evil", "1", "0.5"]


def test_pairs_lists_a_library_without_exposing_it(shim):
    assert shim.run("local n = 0 for name, f in pairs(string) do n = n + 1 end print(n)") == ["16"]


def test_setmetatable_refuses_gc(shim):
    outcome = shim.load("setmetatable({}, {__gc = function() end})")
    assert not outcome.ok
    assert "__gc is not allowed" in outcome.value
    assert shown(shim, "getmetatable(setmetatable({}, {__index = {x = 1}})).__index.x") == "1"


def test_collectgarbage_offers_count_only(shim):
    assert shown(shim, "math.type(collectgarbage('count'))") == "float"
    outcome = shim.load("collectgarbage('stop')")
    assert not outcome.ok
    assert 'only "count"' in outcome.value


def test_globals_persist_across_calls_and_loads(shim):
    shim.load("counter = 0 function bump() counter = counter + 1 return counter end")
    assert [shim.call("bump").value["value"] for _ in range(3)] == [1, 2, 3]
    shim.load('aet = "HELLO"')
    assert shown(shim, "aet .. counter") == "HELLO3"


def test_undefined_global_reads_nil(shim):
    assert shown(shim, "type(HelloWorld)") == "nil"


def test_g_is_the_script_environment(shim):
    assert shown(shim, "(function() _G.via_g = 'yes' return via_g end)()") == "yes"


def test_call_of_an_undefined_or_non_function_global_is_skipped(shim):
    shim.load("NotAFunction = 42")
    assert shim.call("OnStoredInstance").value == {"defined": False}
    assert shim.call("NotAFunction").value == {"defined": False}


def test_call_does_not_run_metamethods_of_the_environment(shim):
    shim.load("setmetatable(_G, {__index = function() while true do end end})")
    assert shim.call("Missing").value == {"defined": False}


def test_the_environment_metatable_looks_like_stock_lua(shim):
    # The shim's own metatable on _G (the function tracker) is invisible; a script's own one works.
    assert shim.run("print(getmetatable(_G))") == ["nil"]
    assert shim.run("local mt = {__index = function(_, k) return 'default ' .. k end} setmetatable(_G, mt) "
                    "print(getmetatable(_G) == mt, undefined_thing)") == ["true, default undefined_thing"]
    assert shim.run("setmetatable(_G, nil) print(getmetatable(_G), undefined_thing)") == ["nil, nil"]


def test_load_lists_the_functions_the_scripts_defined(shim):
    # Names of the shim's own globals (print here) are never listed: they are always defined.
    outcome = shim.load("function OnStoredInstance() end function Zeta() end local function hidden() end "
                        "print = function() end")
    assert outcome.value == {"functions": ["OnStoredInstance", "Zeta"]}
    assert shim.load("x = 1").value == {"functions": ["OnStoredInstance", "Zeta"]}


def test_a_load_without_functions_lists_an_empty_array(shim):
    assert shim.load("x = 1").value == {"functions": []}


def test_errors_name_the_chunk(shim):
    assert shim.load("x = = 1").value.startswith('[string "line"]:1:')
    assert shim.load("\n\nerror('boom')", "@/scripts/router.lua").value == "/scripts/router.lua:3: boom"
    shim.load("function Fails() local t = nil return t.x end", "@/scripts/router.lua")
    assert shim.call("Fails").value == "/scripts/router.lua:1: attempt to index a nil value (local 't')"


@pytest.mark.parametrize("source, text", [
    ("error({})", "(error object is a table value)"),
    ("error(42)", "42"),
    ("error()", "(error object is a nil value)"),
    ("error('plain', 0)", "plain"),
])
def test_error_objects_become_text(shim, source, text):
    assert shim.load(source).value == text


def test_ready_frame_names_lua_and_the_builtins(shim):
    import re

    from tests.lua.shim_driver import RUNTIME
    declared = re.findall(r'^\s*"(\w+)",', (RUNTIME / "builtins.lua").read_text(), re.M)
    assert shim.ready == {"lua": "Lua 5.4", "trusted": False, "builtins": declared}
    assert declared[:5] == ["RestApiGet", "RestApiPost", "RestApiPut", "RestApiDelete", "GetOrthancConfiguration"]
