"""Issue 7, finding 8: what scripts write to the server's log is escaped, attributed and rate-limited.

The REST answer of ``/tools/execute-script`` keeps the printed lines unchanged (Orthanc's behaviour);
only the log output is escaped.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from broker.config import Config, ConfigError
from broker.metrics import Metrics
from broker.scripting.script_log import EscapeControlCharacters, ScriptLog, ScriptLogLimits, escape
from tests.support.server import metric

FORGED = "x\n2026-01-01 00:00:00 W luabroker: <a forged log line>\0\x1b[2J"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Scheduler:
    """Collects ``schedule(delay, function)`` calls; the test runs them when it likes."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, object]] = []

    def __call__(self, delay: float, function) -> None:
        self.pending.append((delay, function))

    def run(self) -> None:
        pending, self.pending = self.pending, []
        for _, function in pending:
            function()


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "luabroker.lua"]


@pytest.mark.parametrize("text, shown", [
    ("plain text, é, 日本", "plain text, é, 日本"),
    ("a\nb\rc\td", "a\\nb\\rc\\td"),
    ("\0\x1b[2J\x7f", "\\x00\\x1b[2J\\x7f"),
    ("\x85\u2028\u2029\u202e\u2066", "\\x85\\u2028\\u2029\\u202e\\u2066"),
    ("a\\nb", "a\\nb"),  # a backslash stays: escaping is idempotent, nothing can break a line
])
def test_escape_makes_control_characters_visible(text, shown):
    assert escape(text) == shown
    assert escape(escape(text)) == shown


def test_a_print_line_is_escaped_and_attributed(caplog):
    caplog.set_level(logging.INFO, logger="luabroker.lua")
    ScriptLog(ScriptLogLimits()).line("default", "default/main@abc", "print", FORGED)
    assert messages(caplog) == [
        "default/main@abc: Lua says: x\\n2026-01-01 00:00:00 W luabroker: <a forged log line>\\x00\\x1b[2J"]
    record = caplog.records[-1]
    assert (record.levelno, record.tenant, record.sandbox) == (logging.WARNING, "default", "default/main@abc")


def test_other_levels_keep_their_level(caplog):
    caplog.set_level(logging.DEBUG, logger="luabroker.lua")
    log = ScriptLog(ScriptLogLimits())
    log.line("t", "t/main@1", "error", "Initialize() failed: boom\nforged")
    log.line("t", "t/main@1", "nonsense", "x")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, "t/main@1: Initialize() failed: boom\\nforged"), (logging.INFO, "t/main@1: x")]


def test_a_long_line_is_cut_in_the_log(caplog):
    caplog.set_level(logging.INFO, logger="luabroker.lua")
    ScriptLog(ScriptLogLimits(max_line_length=10)).line("t", "s", "print", "0123456789ABCDEF\n")
    assert messages(caplog) == ["s: Lua says: 0123456789… (8 more characters not logged)"]


def test_the_rate_is_bounded_per_tenant_and_drops_are_reported_once(caplog):
    caplog.set_level(logging.INFO, logger="luabroker.lua")
    clock, scheduler, metrics = Clock(), Scheduler(), Metrics()
    log = ScriptLog(ScriptLogLimits(lines_per_second=2, burst=3), metrics, clock=clock, schedule=scheduler)
    for i in range(5):
        log.line("a", "a/main@1", "print", f"a{i}")
    log.emit("a", "a/main@1", logging.ERROR, "Lua: Error in RestApiGet() for URI: x")
    log.line("b", "b/main@1", "print", "b0")  # another tenant has its own bucket
    assert messages(caplog) == ["a/main@1: Lua says: a0", "a/main@1: Lua says: a1", "a/main@1: Lua says: a2",
                                "b/main@1: Lua says: b0"]
    assert [delay for delay, _ in scheduler.pending] == [ScriptLog.REPORT_INTERVAL_S]  # one report scheduled

    clock.now += 1.0  # two more tokens
    for i in range(5, 8):
        log.line("a", "a/main@1", "print", f"a{i}")
    assert messages(caplog)[-2:] == ["a/main@1: Lua says: a5", "a/main@1: Lua says: a6"]
    assert len(scheduler.pending) == 1

    caplog.clear()
    scheduler.run()
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "4 lines of tenant a dropped from the log (LuaSandbox.LogRateLimit: 2 lines/s, "
                          "burst 3)")]
    assert metrics.registry.get_sample_value("luabroker_lua_log_lines_dropped_total", {"tenant": "a"}) == 4
    assert metrics.registry.get_sample_value("luabroker_lua_log_lines_dropped_total", {"tenant": "b"}) is None

    caplog.clear()
    scheduler.run()  # nothing new: no second report
    assert caplog.records == []
    clock.now += 0.1
    log.line("a", "a/main@1", "print", "a8")  # no token yet: dropped, a new report is scheduled
    assert len(scheduler.pending) == 1


def test_the_safety_net_escapes_every_record_on_the_handler():
    record = logging.LogRecord("sandbox.supervisor", logging.WARNING, __file__, 1, "Initialize() failed: %s",
                               ("boom\n\x1b[2Jforged",), None)
    assert EscapeControlCharacters().filter(record)
    assert record.getMessage() == "Initialize() failed: boom\\n\\x1b[2Jforged"


def test_log_rate_limit_options():
    config = Config.from_json({"LuaSandbox": {"LogRateLimit": {"LinesPerSecond": 0.5, "Burst": 20},
                                              "LogLineMaxLength": 200}}, Path("/etc"))
    assert config.lua_log_limits == ScriptLogLimits(lines_per_second=0.5, burst=20, max_line_length=200)
    assert Config.from_json({}, Path("/etc")).lua_log_limits == ScriptLogLimits(50.0, 500, 4096)
    with pytest.raises(ConfigError, match="Option 'LuaSandbox.LogRateLimit.LinesPerSecond' has value 0"):
        Config.from_json({"LuaSandbox": {"LogRateLimit": {"LinesPerSecond": 0}}}, Path("/etc"))
    with pytest.raises(ConfigError, match="Option 'LuaSandbox.LogRateLimit' has an unknown member 'Rate'"):
        Config.from_json({"LuaSandbox": {"LogRateLimit": {"Rate": 1}}}, Path("/etc"))


def test_a_forged_print_is_one_escaped_attributed_line_and_the_answer_is_unchanged(luabroker, caplog):
    caplog.set_level(logging.INFO, logger="luabroker")
    server = luabroker(ExecuteLuaEnabled=True)
    answer = server.execute("print('x\\n<a forged log line>\\0\\27[2J')")
    assert answer.text == "x\n<a forged log line>\0\x1b[2J\n"
    said = [m for m in messages(caplog) if "Lua says: " in m]
    assert len(said) == 1 and said[0].endswith(": Lua says: x\\n<a forged log line>\\x00\\x1b[2J"), said
    assert said[0].startswith(f"default/main@{server.server.services.scripts.version[:12]}: ")
    assert not [r for r in caplog.records if "\n" in r.getMessage() or "\0" in r.getMessage()]


def test_a_builtins_log_line_with_a_script_uri_is_escaped_and_attributed(luabroker, caplog):
    caplog.set_level(logging.INFO, logger="luabroker")
    server = luabroker(ExecuteLuaEnabled=True)
    server.execute("RestApiGet('/no/such\\nW forged')")
    lines = [m for m in messages(caplog) if "Error in RestApiGet()" in m]
    assert len(lines) == 1 and lines[0].startswith("default/main@"), messages(caplog)
    assert "/no/such\\nW forged" in lines[0]


def test_a_print_flood_is_cut_in_the_log_but_not_in_the_answer(luabroker, caplog):
    caplog.set_level(logging.INFO, logger="luabroker")
    server = luabroker(ExecuteLuaEnabled=True, LuaSandbox={"CallTimeout": 2, "HardTimeout": 6,
                                                           "LogRateLimit": {"LinesPerSecond": 0.001, "Burst": 5}})
    answer = server.execute("for i = 1, 40 do print(i) end")
    assert answer.text == "".join(f"{i}\n" for i in range(1, 41))
    assert len([m for m in messages(caplog) if "Lua says: " in m]) == 5
    assert metric(server, "luabroker_lua_log_lines_dropped_total", tenant="default") == 35
