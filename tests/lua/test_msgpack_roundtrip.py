"""The shim's msgpack codec (lua-runtime/msgpack.lua) against Python's, in both directions.

A built-in's arguments cross back to the broker unchanged, so a script that hands its own arguments
to ``RestApiPut`` echoes them: Python → Lua (call args) → Python (rpc args).
"""
from __future__ import annotations

import math

import pytest

SCRIPT = """
function echo(...) RestApiPut(...) end
function kinds(...)
  local args, out = table.pack(...), {}
  for i = 1, args.n do out[i] = math.type(args[i]) or type(args[i]) end
  return out
end
function fetched()
  local value = RestApiGet("/anything")
  return {math.type(value) or type(value), type(value) == "string" and #value or 0}
end
"""


@pytest.fixture
def lua(shim):
    shim.load(SCRIPT)
    return shim


def echo(shim, *values):
    outcome = shim.call("echo", *values, on_rpc=lambda rpc: (True, None))
    assert outcome.ok, outcome.value
    (rpc,) = outcome.rpcs
    return rpc.args


INTEGERS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1,
            -1, -32, -33, -128, -129, -32768, -32769, -2**31, -2**31 - 1, -2**63]


def test_integers_cross_at_every_format_boundary(lua):
    assert echo(lua, *INTEGERS) == INTEGERS
    assert lua.call("kinds", *INTEGERS, keep_strings=True).value["value"] == ["integer"] * len(INTEGERS)


def test_floats_stay_floats_even_when_integral(lua):
    floats = [1.5, -0.25, 1e300, 2.0, float("inf"), float("-inf"), 5e-324]
    back = echo(lua, *floats)
    assert back == floats
    assert all(isinstance(x, float) for x in back)
    assert lua.call("kinds", *floats, keep_strings=True).value["value"] == ["float"] * len(floats)


def test_nan_crosses_as_nan(lua):
    (back,) = echo(lua, float("nan"))
    assert math.isnan(back)


def test_uint64_above_the_lua_integer_range_becomes_a_float(lua):
    assert echo(lua, 2**64 - 1) == [float(2**64)]
    assert lua.call("kinds", 2**64 - 1, keep_strings=True).value["value"] == ["float"]


@pytest.mark.parametrize("size", [0, 1, 31, 32, 255, 256, 65535, 65536, 1 << 20])
def test_text_of_every_str_size_comes_back_as_str(lua, size):
    text = "a" * size
    assert echo(lua, text, "é😀" + text) == [text, "é😀" + text]


@pytest.mark.parametrize("size", [1, 255, 256, 65535, 65536, 1 << 20])
def test_bytes_that_are_not_utf8_come_back_as_bytes(lua, size):
    data = bytes(range(256)) * (size // 256) + b"\xff" * (size % 256)
    assert echo(lua, data) == [data]


def test_bytes_that_are_valid_utf8_come_back_as_str(lua):
    # The wire rule: Lua has one string type, and a valid UTF-8 string travels as msgpack str.
    assert echo(lua, b"plain", "é😀".encode()) == ["plain", "é😀"]


def test_surrogates_and_overlong_forms_are_not_utf8(lua):
    for data in (b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80"):
        assert echo(lua, data) == [data]


def test_nils_and_booleans_keep_their_positions(lua):
    # A trailing None is an absent argument, which Lua cannot tell from nil anyway.
    assert echo(lua, None, True, None, False) == [None, True, None, False]


def test_nested_containers_cross_with_orthanc_array_rule(lua):
    value = {"list": [1, [2, 3], {"k": "v"}], "empty list": [], "empty map": {}}
    # An empty Lua table is an array for Orthanc, whatever it was made from.
    assert echo(lua, value) == [{"list": [1, [2, 3], {"k": "v"}], "empty list": [], "empty map": []}]


def test_deep_nesting_within_the_cap_crosses(lua):
    value: list = []
    for _ in range(40):
        value = [value]
    assert echo(lua, value) == [value]


@pytest.mark.parametrize("reply, kind", [
    (7, ["integer", 0]),
    (7.0, ["float", 0]),
    (b"\x00\xff", ["string", 2]),
    ("é", ["string", 2]),
    (None, ["nil", 0]),
    (True, ["boolean", 0]),
])
def test_reply_values_decode_to_lua_types(lua, reply, kind):
    outcome = lua.call("fetched", keep_strings=True, on_rpc=lambda rpc: (True, reply))
    assert outcome.ok, outcome.value
    assert outcome.value["value"] == [kind[0], str(kind[1])]
