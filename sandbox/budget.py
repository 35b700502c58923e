"""The budget of one top-level call: wall-clock time, built-in calls and nested executions.

A call's CPU limit counts only Lua's own time, and its hard deadline only the child's working time
(``Limits``). Neither bounds a call that spends its time in built-ins: a script that calls
``HttpPost`` to a slow host 45 times, or fans out ``RestApiPost('/tools/execute-script')`` at every
level, holds its process (and the thread that called it) for as long as it likes. The budget closes
that hole. It is opened by the first call on a thread (the top-level call) and shared by everything
that call causes on the same thread: the built-ins it makes, and the calls into any sandbox that those
built-ins make in turn (a ``RestApiPost('/instances')`` that runs the instance filter, an
execute-script through ``RestApiPost``). Its three bounds:

- ``wall_s``: the total wall-clock time, built-ins included;
- ``max_builtin_calls``: the built-in calls of the whole tree;
- ``max_nested_calls``: the calls and loads nested under the top-level one.

Past any of them the budget is spent for good: the channel answers the pending built-in with the
error and tells the shim to end the call (a kill that no ``pcall`` catches), refuses every further
built-in and nested call, and kills the process if the call does not end within ``KILL_GRACE_S``.

Work in the broker cannot be interrupted, so the built-ins that wait bound themselves by
``remaining()``: the Lua HTTP client's timeout, and the wait for a busy sandbox.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

#: How long a call whose budget is spent has to end by itself before its process is killed.
KILL_GRACE_S = 2.0

_local = threading.local()


class BudgetExceeded(Exception):
    """Raised where a spent budget refuses a nested call; ``str()`` is the reason."""


@dataclass
class CallBudget:
    """The state of one top-level call's budget (see the module docstring)."""

    #: The channel of the top-level call: the one whose process is killed when the time is up.
    owner: object
    wall_s: float
    max_builtin_calls: int
    max_nested_calls: int
    started: float
    builtin_calls: int = 0
    nested_calls: int = 0
    #: Why the budget is spent (``None`` while it is not); once set, never cleared.
    spent: str | None = None

    @property
    def deadline(self) -> float:
        return self.started + self.wall_s

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def check_wall(self) -> str | None:
        """The reason if the wall-clock time is up (and remember it), else ``None``."""
        if self.spent is None and time.monotonic() >= self.deadline:
            self.spent = f"wall-clock limit exceeded ({self.wall_s:g} s for the call, built-ins included)"
        return self.spent

    def count_builtin(self) -> str | None:
        """Count one built-in call; the reason if that spends the budget (or it was spent)."""
        self.builtin_calls += 1
        if self.spent is None and self.builtin_calls > self.max_builtin_calls:
            self.spent = f"too many built-in calls (more than {self.max_builtin_calls} in one call)"
        return self.check_wall()

    def count_nested(self) -> None:
        """Count one nested call; raises ``BudgetExceeded`` if the budget is (or becomes) spent."""
        self.nested_calls += 1
        if self.spent is None and self.nested_calls > self.max_nested_calls:
            self.spent = f"too many nested calls (more than {self.max_nested_calls} in one call)"
        reason = self.check_wall()
        if reason is not None:
            raise BudgetExceeded(reason)


def current() -> CallBudget | None:
    """The budget of the call running on this thread, if any."""
    return getattr(_local, "budget", None)


def remaining() -> float | None:
    """Seconds left to the call running on this thread (never negative), or ``None`` outside a call."""
    budget = current()
    return None if budget is None else max(0.0, budget.remaining())


def bounded(seconds: float) -> float:
    """``seconds``, cut to what is left of this thread's call: how long a built-in may wait."""
    left = remaining()
    return seconds if left is None else min(seconds, left)


@contextmanager
def scope(owner: object, wall_s: float, max_builtin_calls: int, max_nested_calls: int) -> Iterator[CallBudget]:
    """The budget of this thread's call: a new one, owned by ``owner``, for a top-level call; else
    the one in force, counting this call as nested (``BudgetExceeded`` when that is one too many)."""
    budget = current()
    if budget is not None:
        budget.count_nested()
        yield budget
        return
    budget = CallBudget(owner, wall_s, max_builtin_calls, max_nested_calls, time.monotonic())
    _local.budget = budget
    try:
        yield budget
    finally:
        _local.budget = None
