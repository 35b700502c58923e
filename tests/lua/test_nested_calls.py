"""Built-ins as rpcs: arguments, replies, and calls that arrive while a reply is awaited."""
from __future__ import annotations

import subprocess

from tests.lua.shim_driver import LUA, RUNTIME


def answer(value):
    return lambda rpc: (True, value)


def test_nested_call_is_answered_before_the_reply(shim):
    shim.load("function OnStoredInstance(id) return 'stored ' .. RestApiPost('/instances', id) end "
              "function ReceivedInstanceFilter(tags) return tags.Modality == 'CT' end")
    seen = []

    def broker(rpc):
        # While the rpc is pending, a filter runs in the same process (e.g. RestApiPost('/instances')).
        nested = shim.call("ReceivedInstanceFilter", {"Modality": "CT"})
        seen.append(nested.value)
        return True, "1234-5678"

    outcome = shim.call("OnStoredInstance", "abc", on_rpc=broker)
    assert seen == [{"defined": True, "value": True}]
    assert outcome.value == {"defined": True, "value": "stored 1234-5678"}
    assert [(rpc.builtin, rpc.args) for rpc in outcome.rpcs] == [("RestApiPost", ["/instances", "abc"])]


def test_nested_load_runs_in_the_same_environment(shim):
    shim.load("function Outer() RestApiGet('/system') return installed end")

    def broker(rpc):
        assert shim.load("installed = 'by a nested load'").ok
        return True, None

    assert shim.call("Outer", on_rpc=broker).value == {"defined": True, "value": "by a nested load"}


def test_calls_nest_more_than_one_level(shim):
    shim.load("function Depth(n) if n == 0 then return 0 end return 1 + RestApiGet('/depth', n) end")

    def broker(rpc):
        (_, n) = rpc.args
        return True, shim.call("Depth", n - 1, on_rpc=broker).value["value"]

    assert shim.call("Depth", 5, on_rpc=broker).value == {"defined": True, "value": 5}


def test_failing_nested_call_leaves_the_waiting_call_intact(shim):
    shim.load("function Outer() return RestApiGet('/x') .. ' after' end function Broken() error('nested') end")

    def broker(rpc):
        assert shim.call("Broken").value == '[string "line"]:1: nested'
        return True, "reply"

    assert shim.call("Outer", on_rpc=broker).value == {"defined": True, "value": "reply after"}


def test_nested_call_cpu_time_is_not_billed_to_the_waiting_call(shim):
    shim.load("local function burn(s) local stop = os.clock() + s while os.clock() < stop do end end "
              "function Outer() RestApiGet('/x') burn(0.5) return 'outer done' end "
              "function Nested() burn(0.8) return 'nested done' end")

    def broker(rpc):
        assert shim.call("Nested", cpu=2.0).value == {"defined": True, "value": "nested done"}
        return True, None

    # 0.8 s in the nested call and 0.5 s in the outer one: together over the outer budget of 1 s.
    assert shim.call("Outer", cpu=1.0, on_rpc=broker).value == {"defined": True, "value": "outer done"}


def test_killed_nested_call_leaves_the_waiting_call_intact(shim):
    shim.load("function Outer() return RestApiGet('/x') end function Spin() while true do end end")

    def broker(rpc):
        assert shim.call("Spin", cpu=0.2).value.startswith("cpu time limit exceeded")
        return True, "fine"

    assert shim.call("Outer", on_rpc=broker).value == {"defined": True, "value": "fine"}


def test_nils_in_rpc_arguments_keep_their_positions(shim):
    shim.load("function Calls() RestApiGet('/a', nil, {h = '1'}) RestApiGet('/b', nil) RestApiDelete() "
              "RestApiPost('/c', nil, nil) end")
    outcome = shim.call("Calls", on_rpc=answer(None))
    assert [rpc.args for rpc in outcome.rpcs] == [["/a", None, {"h": "1"}], ["/b", None], [], ["/c", None, None]]


def test_rpc_arguments_keep_their_lua_types(shim):
    # Unlike a call result (Orthanc's GetJson), built-in arguments are not coerced: the broker decides.
    shim.load("function Args() RestApiPost('/x', '42', 7, 2.0, {b = true}, {}) end")
    (rpc,) = shim.call("Args", on_rpc=answer(None)).rpcs
    assert rpc.args == ["/x", "42", 7, 2.0, {"b": True}, []]
    assert isinstance(rpc.args[3], float)


def test_binary_strings_cross_as_bytes_both_ways(shim):
    shim.load("function Upload() local answer = RestApiPost('/instances', '\\0DICM\\255') "
              "return {#answer, answer:byte(1), answer:byte(-1)} end")
    outcome = shim.call("Upload", on_rpc=answer(b"\xff\x00\x80"))
    assert outcome.rpcs[0].args == ["/instances", b"\x00DICM\xff"]
    assert outcome.value == {"defined": True, "value": [3, 255, 128]}


def test_failed_reply_raises_in_the_script_at_the_call_site(shim):
    shim.load("function Uncaught() RestApiGet('/x') end\n"
              "function Caught() local ok, err = pcall(RestApiGet, '/x') return {ok, err} end")
    failing = lambda rpc: (False, "no such route")  # noqa: E731
    assert shim.call("Uncaught", on_rpc=failing).value == '[string "line"]:1: no such route'
    assert shim.call("Caught", on_rpc=failing).value == {"defined": True, "value": [False, "no such route"]}


def test_rpc_ids_count_up(shim):
    shim.load("function Twice() RestApiGet('/a') RestApiGet('/b') end")
    first = shim.call("Twice", on_rpc=answer(None)).rpcs
    second = shim.call("Twice", on_rpc=answer(None)).rpcs
    assert [rpc.id for rpc in first + second] == [1, 2, 3, 4]


def test_end_of_input_while_waiting_for_a_reply_exits_quietly(shim):
    shim.load("function Waits() RestApiGet('/x') end")
    shim.send(["call", 99, "Waits", [], {}])
    assert shim.receive().builtin == "RestApiGet"
    shim.process.stdin.close()
    assert shim.wait() == 0


def test_reply_to_another_rpc_is_a_protocol_error(shim):
    shim.load("function Waits() RestApiGet('/x') end")
    shim.send(["call", 99, "Waits", [], {}])
    rpc = shim.receive()
    shim.send(["reply", rpc.id + 1, True, None])
    assert shim.wait() == 1
    assert "expected the reply to rpc" in shim.stderr()


STUB_OUTSIDE_A_CALL = """
local directory, modules = ..., {}
local function import(name)
  modules[name] = modules[name] or assert(loadfile(directory .. "/" .. name .. ".lua", "t"))(import)
  return modules[name]
end
local env = import("sandbox").build({
  rpc = function() error("an rpc was sent") end, log = print, max_log_lines = 10,
})
print(select(2, pcall(env.RestApiGet, "/system")))
"""


def test_builtin_called_outside_a_callback_fails_with_its_name():
    # Outside the frame loop: nothing in the wire protocol can run script code between calls.
    completed = subprocess.run([LUA, "-E", "-", str(RUNTIME)], input=STUB_OUTSIDE_A_CALL, capture_output=True,
                               text=True, timeout=10)
    assert completed.stdout.strip().endswith("RestApiGet can only be called while a callback runs")
