"""print and PrintRecursive, as Orthanc writes them (spec section 3)."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("source, line", [
    ("print('a', 1, nil, true)", "a, 1, nil, true"),
    ("print()", ""),
    ("print(nil)", "nil"),
    ("print('', 'x')", "x"),           # Orthanc: no separator before the first non-empty piece
    ("print('', '', 'x', '', 'y')", "x, , y"),
    ("print(1.5, 2^53, 10 // 3)", "1.5, 9.007199254741e+15, 3"),
    ("print(setmetatable({}, {__tostring = function() return 'custom' end}))", "custom"),
])
def test_print_joins_tostring_of_each_argument_with_comma_space(shim, source, line):
    assert shim.run(source) == [line]


def test_print_sends_each_line_as_a_print_log_frame(shim):
    outcome = shim.load("print('one') print('two')")
    assert [(log.level, log.text) for log in outcome.logs] == [("print", "one"), ("print", "two")]


def test_print_goes_through_the_scripts_global_tostring(shim):
    assert shim.run("tostring = function(v) return '<' .. type(v) .. '>' end print(1, 'x')") == ["<number>, <string>"]


def test_print_of_a_value_tostring_cannot_convert(shim):
    assert shim.run("tostring = function() return nil end print(1, 2)") == [
        "<No conversion to string>, <No conversion to string>"]


def test_print_keeps_binary_bytes(shim):
    outcome = shim.load("print('\\255\\0')")
    assert outcome.logs[0].text == "\ufffd\x00"  # messages.py decodes bin with "replace"


def test_print_recursive_of_a_scalar(shim):
    assert shim.run("PrintRecursive('x')") == ["string, x"]


def test_print_recursive_of_a_table_prints_keys_with_tab_indents(shim):
    lines = shim.run("PrintRecursive({PatientName = 'DOE', Series = {{Modality = 'CT'}}})")
    assert lines[0] == "table"
    assert sorted(lines[1:]) == sorted([
        "\t[PatientName], string, DOE",
        "\t[Series], table",
        "\t[Series]\t[1], table",
        "\t[Series]\t[1]\t[Modality], string, CT",
    ])


def test_print_recursive_stops_at_the_item_limit(shim):
    lines = shim.run("local t = {} for i = 1, 150 do t[i] = i end PrintRecursive(t)")
    assert len(lines) == 1 + 100 + 1
    assert lines[1] == "\t[1], number, 1"
    assert lines[-1] == "ERROR: Item limit reached."


def test_print_recursive_takes_a_limit_and_an_indent(shim):
    assert shim.run("PrintRecursive({1, 2, 3}, 2, '>')") == [
        ">, table", ">\t[1], number, 1", ">\t[2], number, 2", "ERROR: Item limit reached."]


def test_print_recursive_prints_through_the_scripts_print(shim):
    outcome = shim.load("local lines = {} "
                        "print = function(...) lines[#lines + 1] = table.concat({...}, '|') end "
                        "PrintRecursive({a = 1}) "
                        "function printed() return lines end")
    assert outcome.printed == []
    assert shim.call("printed", keep_strings=True).value["value"] == ["|table", "\t[a]|number|1"]


def test_print_lines_past_the_cap_are_dropped_with_one_warning(start_shim):
    shim = start_shim("--max-log-lines=5")
    outcome = shim.load("for i = 1, 20 do print(i) end")
    assert outcome.ok
    assert outcome.printed == ["1", "2", "3", "4", "5"]
    warnings = [log.text for log in outcome.logs if log.level == "warning"]
    assert len(warnings) == 1 and "more than 5 lines" in warnings[0]
    # The cap is per call: the next one prints again.
    assert shim.run("print('again')") == ["again"]


def test_long_print_lines_are_truncated_at_a_character_boundary(shim):
    (line,) = shim.run("print(('é'):rep(40000))")
    assert line.endswith(" [truncated]")
    assert len(line.encode()) <= 64 * 1024 + len(" [truncated]")
    assert set(line.removesuffix(" [truncated]")) == {"é"}
