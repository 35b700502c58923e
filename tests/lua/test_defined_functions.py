"""The list of script-defined global functions, kept exact after every call (messages.py, result's
fifth element): a callback that defines a function at run time is seen by the broker's fast path."""
from __future__ import annotations


def test_a_call_that_defines_a_function_reports_the_new_list(shim):
    assert shim.load("function Initialize() function OnStoredInstance() end end").value == {
        "functions": ["Initialize"]}
    outcome = shim.call("Initialize")
    assert outcome.ok and outcome.functions == ("Initialize", "OnStoredInstance")


def test_a_call_that_changes_nothing_sends_no_list(shim):
    shim.load("n = 0 function Bump() n = n + 1 local x = {} x.y = function() end return n end")
    assert [shim.call("Bump").functions for _ in range(3)] == [None, None, None]


def test_an_undefined_callback_still_reports_a_change_made_earlier(shim):
    # A nested or failed call may leave the list dirty; the next result of any kind carries it.
    shim.load("function Define() Late = function() end error('after defining') end")
    failed = shim.call("Define")
    assert not failed.ok and failed.functions == ("Define", "Late")
    assert shim.call("Missing").functions is None


def test_a_global_that_becomes_a_function_later_is_seen(shim):
    # A raw assignment to an existing key is invisible to __newindex: the watch list catches it.
    shim.load("OnStoredInstance = false function Enable() OnStoredInstance = function() end end")
    assert shim.call("Enable").functions == ("Enable", "OnStoredInstance")


def test_a_function_overwritten_then_redefined_is_listed_again(shim):
    shim.load("function F() end function Off() F = 0 G = function() end end function On() F = function() end end")
    assert shim.call("Off").functions == ("G", "Off", "On")  # recomputed because G is new: F is gone
    assert shim.call("On").functions == ("F", "G", "Off", "On")


def test_rawset_on_the_environment_is_noted(shim):
    shim.load("function Define() rawset(_G, 'ViaRawset', function() end) end")
    assert shim.call("Define").functions == ("Define", "ViaRawset")


def test_functions_defined_through_G_and_load_are_noted(shim):
    shim.load("function Define() _G.ViaG = function() end load('function ViaLoad() end')() end")
    assert shim.call("Define").functions == ("Define", "ViaG", "ViaLoad")


def test_shim_globals_replaced_by_scripts_are_never_listed(shim):
    shim.load("function Replace() print = function() end RestApiGet = function() end end")
    assert shim.call("Replace").functions is None


def test_a_script_metatable_on_G_keeps_the_list_exact(shim):
    shim.load("setmetatable(_G, {__newindex = function(t, k, v) rawset(t, k, v) end}) "
              "function Define() Strict = function() end end")
    assert shim.call("Define").functions == ("Define", "Strict")
    assert shim.call("Define").functions is None


def test_a_function_defined_by_a_nested_call_is_reported_by_that_call(shim):
    from sandbox.messages import call_message

    shim.load("function Outer() return RestApiGet('/x') end function Inner() function FromInner() end end")
    seen = []

    def on_rpc(rpc):
        inner_id = 1000
        shim.send(call_message(inner_id, "Inner", [], {"keepStrings": False, "cpu": 1}))
        seen.append(shim._await(inner_id, lambda r: (True, None)))
        return True, "done"

    outer = shim.call("Outer", on_rpc=on_rpc)
    assert seen[0].functions == ("FromInner", "Inner", "Outer")
    assert outer.ok and outer.functions is None


def test_a_function_defined_and_dropped_in_one_call_changes_nothing(shim):
    shim.load("function Flicker() Temp = function() end Temp = nil end")
    assert shim.call("Flicker").functions is None


def test_thousands_of_transient_globals_keep_the_list_exact(shim):
    shim.load("function Churn(n) for i = 1, n do _G['tmp' .. i] = i _G['tmp' .. i] = nil end end "
              "function Define() Later = function() end end")
    assert shim.call("Churn", 5000).functions is None
    assert shim.call("Define").functions == ("Churn", "Define", "Later")
