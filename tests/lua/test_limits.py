"""Hostile scripts against the per-call soft limits (sandbox-research.md 4.2, cases by number).

Each case must end in a clean error of that call, after which the same process answers the next
call with its globals intact.
"""
from __future__ import annotations

import pytest

CPU = 0.3
MEMORY_KB = 64 * 1024

SURVIVOR = 'survivor = "still here" function Alive() return survivor end'


@pytest.fixture
def lua(start_shim):
    shim = start_shim(f"--memory-kb={MEMORY_KB}", "--max-log-lines=50")
    assert shim.load(SURVIVOR).ok
    return shim


def run_hostile(shim, body: str, cpu: float = CPU):
    """Install ``body`` as a callback, call it under a soft CPU limit, and check the aftermath."""
    assert shim.load(f"function Hostile()\n{body}\nend").ok
    outcome = shim.call("Hostile", cpu=cpu)
    assert shim.call("Alive").value == {"defined": True, "value": "still here"}
    return outcome


LOOP = "local function loop() while true do end end\n"

CPU_CASES = {
    "1 plain loop": "while true do end",
    "2 pcall inside a loop": "while true do pcall(function() while true do end end) end",
    "3 xpcall with a looping handler": LOOP + "while true do xpcall(loop, function() while true do end end) end",
    "4 loop in a coroutine": LOOP + "while true do coroutine.resume(coroutine.create(loop)) end",
    "5 recursive coroutine.wrap under pcall": "local function f() while true do pcall(coroutine.wrap(f)) end end f()",
    "6 table.sort with a looping comparator": LOOP + "while true do pcall(table.sort, {3, 2, 1}, loop) end",
    "6 gsub with a looping callback": LOOP + "while true do pcall(string.gsub, 'abc', '%w', loop) end",
    "20 looping __close while unwinding": "local x <close> = setmetatable({}, {__close = function() "
                                          "while true do end end}) error('boom')",
    "- loop in a message handler of a wrapped coroutine": LOOP + "coroutine.wrap(function() "
                                                               "xpcall(error, loop) end)()",
}


@pytest.mark.parametrize("body", CPU_CASES.values(), ids=CPU_CASES.keys())
def test_cpu_bound_script_fails_cleanly_and_the_process_lives_on(lua, body):
    outcome = run_hostile(lua, body)
    assert not outcome.ok
    assert outcome.value.startswith("cpu time limit exceeded")


def test_8_growing_table_hits_the_memory_cap(lua):
    outcome = run_hostile(lua, "local t = {} while true do t[#t + 1] = ('x'):rep(1024) .. #t end", cpu=10)
    assert not outcome.ok
    assert outcome.value.startswith("memory limit exceeded")


def test_8_memory_kill_cannot_be_swallowed_by_pcall(lua):
    outcome = run_hostile(lua, "local t = {} while true do pcall(function() "
                               "for i = 1, 1e9 do t[#t + 1] = ('x'):rep(1024) .. i end end) end", cpu=10)
    assert not outcome.ok
    assert outcome.value.startswith("memory limit exceeded")


def test_11_deep_recursion_ends_in_a_stack_overflow_or_the_memory_cap(lua):
    outcome = run_hostile(lua, "local function f() return 1 + f() end return f()", cpu=10)
    assert not outcome.ok
    assert "stack overflow" in outcome.value or outcome.value.startswith("memory limit exceeded")


def test_12_recursive_index_metamethod_is_a_c_stack_overflow(lua):
    outcome = run_hostile(lua, "return setmetatable({}, {__index = function(t, k) return t[k] end}).x")
    assert not outcome.ok
    assert "stack overflow" in outcome.value


def test_19_gc_metamethod_is_refused(lua):
    outcome = run_hostile(lua, "setmetatable({}, {__gc = function() while true do end end})")
    assert not outcome.ok
    assert "__gc is not allowed" in outcome.value


def test_21_error_object_with_looping_tostring_gets_a_generic_message(lua):
    outcome = run_hostile(lua, "error(setmetatable({}, {__tostring = function() while true do end end}))")
    assert outcome.value == "(error object is a table value)"


def test_22_result_with_looping_metamethods_is_encoded_raw(lua):
    loop = "function() while true do end end"
    outcome = run_hostile(lua, f"return setmetatable({{a = 1}}, {{__pairs = {loop}, __len = {loop}, "
                               f"__index = {loop}}})")
    assert outcome.ok and outcome.value == {"defined": True, "value": {"a": 1}}


@pytest.mark.parametrize("body", [
    "local t = {} t.self = t return t",
    "local t = {} for i = 1, 1e5 do t = {t} end return t",
])
def test_22_cyclic_or_very_deep_results_are_refused(lua, body):
    outcome = run_hostile(lua, body)
    assert not outcome.ok
    assert "nested tables" in outcome.value


def test_22_function_result_is_null(lua):
    assert run_hostile(lua, "return print").value == {"defined": True, "value": None}


def test_24_print_flood_is_capped_and_bounded_by_the_cpu_limit(lua):
    outcome = run_hostile(lua, "for i = 1, 1e5 do print(('y'):rep(1e5)) end")
    assert len(outcome.printed) == 50
    assert all(len(line) <= 64 * 1024 + len(" [truncated]") for line in outcome.printed)
    assert [log.level for log in outcome.logs].count("warning") == 1


def test_25_top_level_yield_cannot_leave_the_call(lua):
    outcome = run_hostile(lua, "coroutine.yield('FAKE')")
    assert outcome.value == "attempt to yield across the sandbox boundary"


def test_25_yield_inside_a_script_coroutine_still_works(lua):
    outcome = run_hostile(lua, "local co = coroutine.wrap(function() coroutine.yield(1) return 2 end) "
                               "return co() + co()")
    assert outcome.value == {"defined": True, "value": 3}


def test_a_looping_load_fails_cleanly(start_shim):
    shim = start_shim("--cpu=0.3")
    outcome = shim.load("while true do end")
    assert outcome.value.startswith("cpu time limit exceeded")
    assert shim.run("print('next')") == ["next"]
