"""messages.py is the one description of the wire's shapes: what decodes, and what is a protocol error."""
from __future__ import annotations

import pytest

from sandbox.framing import ProtocolError
from sandbox.messages import Log, Ready, Result, Rpc, decode_incoming


def test_result_without_a_function_list():
    assert decode_incoming(["result", 3, True, {"defined": True, "value": 1}]) == Result(
        3, True, {"defined": True, "value": 1}, None)


@pytest.mark.parametrize("ok, value", [(True, {"defined": True, "value": None}), (False, "boom")])
def test_result_with_the_new_function_list(ok, value):
    message = decode_incoming(["result", 4, ok, value, {"functions": ["A", "OnStoredInstance"]}])
    assert message == Result(4, ok, value, ("A", "OnStoredInstance"))


@pytest.mark.parametrize("message", [
    ["result", 4, True, None, {"functions": "A"}],
    ["result", 4, True, None, {"functions": [1]}],
    ["result", 4, True, None, {"other": []}],
    ["result", 4, True, None, None],
    ["result", "4", True, None],
    ["rpc", 1, "X"],
    ["ready"],
    ["log", "print"],
    "result",
])
def test_malformed_messages_are_protocol_errors(message):
    with pytest.raises(ProtocolError):
        decode_incoming(message)


def test_the_other_kinds():
    assert decode_incoming(["ready", {"lua": "Lua 5.4", "trusted": False}]) == Ready({"lua": "Lua 5.4",
                                                                                       "trusted": False})
    assert decode_incoming(["rpc", 1, "RestApiGet", ["/x"]]) == Rpc(1, "RestApiGet", ["/x"])
    assert decode_incoming(["log", "print", b"\xff"]) == Log("print", "\ufffd")
