"""DumpJson, ParseJson and the conversion of call results: Orthanc's rules (spec 1b-1d, 3 and 8)."""
from __future__ import annotations

import pytest


def shown(shim, expression: str) -> str:
    """What ``print(expression)`` prints in the sandbox."""
    (line,) = shim.run(f"print({expression})")
    return line


# -- DumpJson: Lua → JSON value (1b) and the writer (1c) ------------------------------------------

@pytest.mark.parametrize("lua, text", [
    ("{}", "[]"),
    ("{1, 2, 3}", "[1,2,3]"),
    ("{1, 2, x = 3}", '{"1":1,"2":2,"x":3}'),
    ("{[2] = 'b'}", '{"2":"b"}'),
    ("{b = 1, a = 2, B = 3, ['é'] = 4}", '{"B":3,"a":2,"b":1,"\\u00e9":4}'),
    ("{a = {}, b = {{}}}", '{"a":[],"b":[[]]}'),
    ("{1, print, 3}", "[1,null,3]"),
    ("{f = print}", '{"f":null}'),
    ("{1.5, 2.0}", "[1.5,2]"),
    ("nil", "null"),
    ("true", "true"),
])
def test_dump_json_follows_orthancs_array_rule_and_writer(shim, lua, text):
    assert shown(shim, f"DumpJson({lua})") == text


def test_dump_json_of_an_empty_parsed_object_is_an_empty_array(shim):
    assert shown(shim, "DumpJson(ParseJson('{}'))") == "[]"


@pytest.mark.parametrize("lua, text", [
    ("' 12 '", "12"),
    ("'0x10'", "16"),
    ("'1e3'", "1000"),
    ("'00123'", "123"),
    ("'abc'", '"abc"'),
    ("'inf'", '"inf"'),
    ("'12\\0'", '"12\\u0000"'),
])
def test_dump_json_turns_numeric_strings_into_numbers(shim, lua, text):
    assert shown(shim, f"DumpJson({lua})") == text


@pytest.mark.parametrize("lua, text", [
    ("2147483647", "2147483647"),
    ("-2147483648", "-2147483648"),
    ("2147483648", "2147483648.0"),
    ("2^40", "1099511627776.0"),
    ("1e10", "10000000000.0"),
    ("-0.0", "0"),
    ("0.1", "0.10000000000000001"),
    ("44.37", "44.369999999999997"),
    ("1e300", "1.0000000000000001e+300"),
    ("0/0", "null"),
    ("1/0", "1e+9999"),
    ("-1/0", "-1e+9999"),
])
def test_dump_json_numbers_are_int32_or_doubles_written_with_17_digits(shim, lua, text):
    assert shown(shim, f"DumpJson({lua})") == text


@pytest.mark.parametrize("lua, text", [
    ("{a = 42, b = 1.5, c = 2.0, d = 'x', e = true}", '{"a":"42","b":"1.5","c":"2.0","d":"x","e":true}'),
    ("'42'", '"42"'),
    ("{1, 2}", '["1","2"]'),
])
def test_dump_json_keep_strings_turns_numbers_into_strings(shim, lua, text):
    assert shown(shim, f"DumpJson({lua}, true)") == text


@pytest.mark.parametrize("lua, text", [
    ("'é'", '"\\u00e9"'),
    ("'😀'", '"\\ud83d\\ude00"'),
    ("'\\1\\31\\127'", '"\\u0001\\u001f\x7f"'),
    ("'\"\\\\/\\b\\f\\n\\r\\t'", '"\\"\\\\/\\b\\f\\n\\r\\t"'),
    ("'\\255'", '"\\ufffd"'),
    ("'\\192\\175'", '"\\ufffd"'),
    ("'\\237\\160\\128'", '"\\ufffd"'),
])
def test_dump_json_escapes_everything_but_printable_ascii(shim, lua, text):
    assert shown(shim, f"DumpJson({lua})") == text


@pytest.mark.parametrize("call", ["DumpJson()", "DumpJson(1, true, 3)", "DumpJson(1, 'yes')", "DumpJson(1, nil)"])
def test_dump_json_argument_rules_give_nil(shim, call):
    assert shown(shim, call) == "nil"


def test_dump_json_refuses_boolean_keys(shim):
    outcome = shim.load("DumpJson({[true] = 1})")
    assert not outcome.ok
    assert "boolean key" in outcome.value


def test_dump_json_refuses_cycles(shim):
    outcome = shim.load("local t = {} t[1] = t DumpJson(t)")
    assert not outcome.ok
    assert "nested tables" in outcome.value


# -- ParseJson (1d, 1a) -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ('{"a": 1} // comment', '{"a":1}'),
    ('/* lead */ [1, /* mid */ 2] trailing text', "[1,2]"),
    ('{"a": 1, "a": 2}', '{"a":2}'),
    ('[1, 2,]', "[1,2]"),
    ('{"a": 1,}', '{"a":1}'),
    ('"text"', '"text"'),
    ("42", "42"),
    ('{"a": 1}\\0{"b": 2}', '{"a":1}'),
    ('{"a": 1}\\0garbage', '{"a":1}'),
    ('\\239\\187\\191[1]', "[1]"),
    ('"\\\\u00e9\\\\ud83d\\\\ude00"', '"\\u00e9\\ud83d\\ude00"'),
    ('{"a": null, "b": [1, null, 3]}', '{"b":{"1":1,"3":3}}'),
])
def test_parse_json_is_lenient_like_jsoncpp(shim, text, expected):
    assert shown(shim, f"DumpJson(ParseJson('{text}'))") == expected


@pytest.mark.parametrize("text", ['{"a": }', "[1 2]", '{"a" 1}', "", "   ", "/* open", "nul", '"\\x"', "{'a': 1}",
                                  "[" * 1001 + "]" * 1001])
def test_parse_json_gives_nil_on_invalid_text(shim, text):
    assert shown(shim, f"ParseJson({text!r}) == nil") == "true"


@pytest.mark.parametrize("text", ["2", "2.0", "1e2", "4294967295", "-2147483648", "4294967296", "1.5"])
def test_parse_json_numbers_are_floats_as_orthanc_pushes_them(shim, text):
    """Orthanc 1.10.1 (Lua 5.3) checked here: ``'n=' .. ParseJson('{"n":2}').n`` is ``n=2.0``."""
    assert shown(shim, f"math.type(ParseJson('{text}'))") == "float"
    assert shown(shim, "'n=' .. ParseJson('{\"n\":2}').n") == "n=2.0"


@pytest.mark.parametrize("call", ["ParseJson()", "ParseJson('1', '2')", "ParseJson(42)", "ParseJson({})"])
def test_parse_json_argument_rules_give_nil(shim, call):
    assert shown(shim, f"{call} == nil") == "true"


def test_parse_json_keeps_raw_bytes_of_strings(shim):
    assert shown(shim, "#ParseJson('\"\\255\\1\"')") == "2"


# -- Call results (GetJson on the first return value) ------------------------------------------------

RESULTS = """
function mixed() return {1, 2, x = 3} end
function empty() return {} end
function nothing() end
function numbers() return {42, 1.5, 2.0, "7", "x"} end
function several() return "first", "second" end
"""


@pytest.mark.parametrize("function, keep_strings, value", [
    ("mixed", False, {"1": 1, "2": 2, "x": 3}),
    ("empty", False, []),
    ("nothing", False, None),
    ("numbers", False, [42, 1.5, 2, 7, "x"]),
    ("numbers", True, ["42", "1.5", "2.0", "7", "x"]),
    ("several", False, "first"),
])
def test_call_result_is_the_first_value_converted_like_orthanc(shim, function, keep_strings, value):
    shim.load(RESULTS)
    outcome = shim.call(function, keep_strings=keep_strings)
    assert outcome.ok, outcome.value
    assert outcome.value == {"defined": True, "value": value}
