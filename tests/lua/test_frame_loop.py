"""The frame loop's protocol: result shapes, end of input, and what makes the shim give up."""
from __future__ import annotations

import struct
import subprocess

import msgpack
import pytest

from sandbox.framing import encode_frame
from tests.lua.shim_driver import LUA, RUNTIME


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def test_result_shapes_of_calls_and_loads(shim):
    assert shim.load("function Answer(a, b) return a + b end").value == {"functions": ["Answer"]}
    assert shim.call("Answer", 40, 2).value == {"defined": True, "value": 42}
    assert shim.call("Missing").value == {"defined": False}
    failed = shim.call("Answer", "x", 1)
    assert (failed.ok, failed.value) == (False, '[string "line"]:1: attempt to add a \'string\' with a \'number\'')


def test_the_process_survives_errors_and_keeps_its_globals(shim):
    shim.load("kept = 'yes' function Fail() error('no') end function Kept() return kept end")
    for _ in range(3):
        assert not shim.call("Fail").ok
    assert shim.call("Kept").value == {"defined": True, "value": "yes"}


def test_call_without_options_uses_the_default_budget(start_shim):
    shim = start_shim("--cpu=0.2")
    shim.load("function Spin() while true do end end")
    shim.send(["call", 7, "Spin", [], {}])
    assert shim.receive().value == "cpu time limit exceeded (0.2 s)"


def test_result_over_the_frame_limit_fails_the_call(shim):
    shim.load("function Huge() return ('x'):rep(64 * 1024 * 1024) end function Small() return 'ok' end")
    outcome = shim.call("Huge")
    assert not outcome.ok
    assert outcome.value.startswith("the result is too large")
    assert shim.call("Small").value == {"defined": True, "value": "ok"}


def test_end_of_input_exits_zero(shim):
    shim.process.stdin.close()
    assert shim.wait() == 0


@pytest.mark.parametrize("frame, complaint", [
    (encode_frame(["reply", 1, True, None]), "expected a well-formed call or load, got a reply message"),
    (encode_frame(["call", "one", "f", [], {}]), "got a call message"),
    (encode_frame(["load", 1, "x = 1"]), "got a load message"),
    (encode_frame({"call": 1}), "got a nil message"),
    (encode_frame(42), "got a number"),
    (struct.pack(">I", 64 * 1024 * 1024 + 1), "exceeds the limit"),
    (struct.pack(">I", 2) + b"\xc1\xc1", "unsupported type byte 0xc1"),
    (struct.pack(">I", 2) + b"\x81\x01", "ends in the middle of a value"),
    (struct.pack(">I", 2) + b"\x01\x02", "bytes after the value"),
    (struct.pack(">I", 5) + b"\xdd\xff\xff\xff\xff", "claims more items"),
    (encode_frame(["call", 1, "f", [nested(70)], {}]), "nested containers"),
    (struct.pack(">I", 10) + b"\x01", "the input ends inside a frame"),
    (b"\x00\x00", "the input ends inside a frame header"),
])
def test_protocol_error_exits_one_and_says_why(shim, frame, complaint):
    shim.process.stdin.write(frame)
    shim.process.stdin.close()
    assert shim.wait() == 1
    assert complaint in shim.stderr()


@pytest.mark.parametrize("flag, complaint", [
    ("--memory=1", "unknown argument --memory=1"),
    ("--memory-kb=1.5", "--memory-kb needs a positive integer"),
    ("--cpu=0", "--cpu needs a positive number"),
])
def test_bad_command_line_flag_exits_two(flag, complaint):
    completed = subprocess.run([LUA, "-E", str(RUNTIME / "shim.lua"), flag], capture_output=True, text=True,
                               timeout=10)
    assert completed.returncode == 2
    assert complaint in completed.stderr


def test_packed_frame_is_what_the_broker_decodes(shim):
    # The shim's own frames decode with the broker's strict settings (no trailing bytes, str vs bin).
    shim.load("function Mixed() return {text = 'é', blob = '\\255'} end")
    shim.send(["call", 5, "Mixed", [], {"keepStrings": True}])
    header = shim.process.stdout.read(4)
    (length,) = struct.unpack(">I", header)
    payload = shim.process.stdout.read(length)
    assert msgpack.unpackb(payload, raw=False) == ["result", 5, True, {"defined": True,
                                                                       "value": {"text": "é", "blob": b"\xff"}}]
