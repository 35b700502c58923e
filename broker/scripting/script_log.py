"""What scripts write to the server's log: escaped, attributed, and bounded per tenant.

A script controls the text of its ``print`` lines, of its error messages and of the URIs and URLs the
built-ins log. Written raw, a newline forges a standalone log line, and NUL or ESC bytes reach the
operator's terminal; a print loop fills the disk. So every such line goes through ``ScriptLog``:

- control characters (C0, DEL, C1, Unicode line separators, bidi overrides) are shown as ``\\n``,
  ``\\x1b``, ``\\u2028`` ...; a backslash is kept as it is, so escaping twice changes nothing and no
  text can end a line;
- the line starts with the sandbox's name (``default/main@1a2b3c4d5e6f``: tenant, role, version);
- a token bucket per tenant (``LuaSandbox.LogRateLimit``) bounds the lines per second; dropped lines
  are counted (``luabroker_lua_log_lines_dropped_total``) and reported by one warning per interval;
- the logged text of one line is cut at ``LuaSandbox.LogLineMaxLength`` characters.

The answer of ``/tools/execute-script`` is not affected: it returns the printed lines as Orthanc does.
``EscapeControlCharacters`` is the safety net for every other record (a Lua error message logged by
the supervisor, say): ``broker.cli`` puts it on the log handlers.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from broker.config.scripts import ScriptLogLimits
from broker.core.token_bucket import TokenBucket

log = logging.getLogger("luabroker.lua")

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(text: str) -> str:
    """``text`` with every control character made visible (``\\n``, ``\\x00``, ``\\u2028``)."""
    def visible(match: re.Match[str]) -> str:
        char = match.group(0)
        code = ord(char)
        return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return _CONTROL.sub(visible, text)


class EscapeControlCharacters(logging.Filter):
    """A handler filter that escapes the final message of every record (the arguments merged in)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        escaped = escape(message)
        if escaped != message:
            record.msg, record.args = escaped, None
        return True


def _start_timer(delay: float, function: Callable[[], None]) -> None:
    timer = threading.Timer(delay, function)
    timer.daemon = True
    timer.start()


class ScriptLog:
    """The log of the scripts of one server: one bucket and one drop count per tenant.

    ``clock`` and ``schedule(delay, function)`` are injectable so that tests need no sleeping.
    """

    #: Seconds between the first dropped line and the warning that counts the drops.
    REPORT_INTERVAL_S = 10.0

    def __init__(self, limits: ScriptLogLimits, metrics: Any = None, *, clock: Callable[[], float] = time.monotonic,
                 schedule: Callable[[float, Callable[[], None]], None] = _start_timer) -> None:
        self.limits = limits
        self._metrics = metrics
        self._clock = clock
        self._schedule = schedule
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}
        self._dropped: dict[str, int] = {}

    def line(self, tenant: str, sandbox: str, level: str, text: str) -> None:
        """A log line of a sandbox process (``on_log``): ``print`` is ``Lua says: …`` at WARNING, as
        in Orthanc; the other levels keep their name (unknown ones are INFO)."""
        if level == "print":
            self._write(tenant, sandbox, logging.WARNING, "Lua says: ", text)
            return
        number = logging.getLevelName(level.upper())
        self._write(tenant, sandbox, number if isinstance(number, int) else logging.INFO, "", text)

    def emit(self, tenant: str, sandbox: str, level: int, text: str) -> None:
        """Log ``text`` (script-controlled in part) for ``sandbox`` of ``tenant``, if its bucket allows."""
        self._write(tenant, sandbox, level, "", text)

    def _write(self, tenant: str, sandbox: str, level: int, label: str, text: str) -> None:
        with self._lock:
            bucket = self._buckets.get(tenant)
            if bucket is None:
                bucket = self._buckets[tenant] = TokenBucket(self.limits.lines_per_second, self.limits.burst,
                                                             self._clock())
            if not bucket.take(self._clock()):
                self._drop(tenant)
                return
        log.log(level, "%s: %s%s", sandbox, label, self._cut(escape(text)),
                extra={"tenant": tenant, "sandbox": sandbox})

    def report_dropped(self) -> None:
        """One warning per tenant that lost lines since the last report."""
        with self._lock:
            dropped, self._dropped = self._dropped, {}
        for tenant, count in sorted(dropped.items()):
            log.warning("%d lines of tenant %s dropped from the log (LuaSandbox.LogRateLimit: %g lines/s, burst %d)",
                        count, tenant, self.limits.lines_per_second, self.limits.burst, extra={"tenant": tenant})

    def _drop(self, tenant: str) -> None:
        if not self._dropped:
            self._schedule(self.REPORT_INTERVAL_S, self.report_dropped)
        self._dropped[tenant] = self._dropped.get(tenant, 0) + 1
        if self._metrics is not None:
            self._metrics.lua_log_dropped.labels(tenant).inc()

    def _cut(self, text: str) -> str:
        limit = self.limits.max_line_length
        if len(text) <= limit:
            return text
        return f"{text[:limit]}… ({len(text) - limit} more characters not logged)"
