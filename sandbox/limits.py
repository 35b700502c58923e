"""The numbers that bound a sandbox: per-call deadlines, process rlimits, restart backoff.

Plain frozen dataclasses so the broker can build them from its configuration once and pass them down;
``next_delay`` is pure so the backoff curve is tested without sleeping.
"""
from __future__ import annotations

from dataclasses import dataclass

from sandbox.framing import DEFAULT_MAX_FRAME


@dataclass(frozen=True)
class CallBounds:
    """What bounds a call beyond its own CPU and working time (``sandbox.budget``).

    A top-level call and everything it causes on its thread (built-ins, calls into any sandbox) share
    ``wall_s`` of wall-clock time, ``max_builtin_calls`` built-in calls and ``max_nested_calls``
    nested calls; ``wall_s`` is raised to the call's hard deadline when that is longer. A call waits
    at most ``busy_timeout_s`` for a process busy with another thread's call.
    """

    wall_s: float = 60.0
    max_builtin_calls: int = 100_000
    max_nested_calls: int = 10_000
    busy_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.wall_s <= 0 or self.busy_timeout_s < 0:
            raise ValueError("CallBounds: wall_s must be positive and busy_timeout_s not negative")
        if self.max_builtin_calls < 1 or self.max_nested_calls < 0:
            raise ValueError("CallBounds: max_builtin_calls must be at least 1, max_nested_calls not negative")


@dataclass(frozen=True)
class Limits:
    """Limits of one sandbox process.

    Two deadlines per call: ``soft_cpu_s`` is sent to the shim, whose count hook fails the callback with a
    Lua error (process and globals survive); ``hard_timeout_s`` is the broker's wall clock for the time
    the child is working, after which the process group is SIGKILLed and restarted. Time the broker
    spends in an rpc handler does not count against ``hard_timeout_s``.

    ``memory_kb`` is the shim's soft cap (allocation failure becomes a Lua error); ``address_space_mb``
    is the kernel's hard cap behind it (RLIMIT_AS). ``cpu_lifetime_s`` (RLIMIT_CPU) only stops a process
    that never stops burning CPU; a restart resets it.

    ``max_frame`` bounds frames in both directions: the broker checks it, and passes it to the shim
    (``--max-frame``, at least 4096 for the product's shim), which refuses a result that would not fit.

    ``nice`` is the process's scheduling niceness (0..19): how much less CPU it gets than the broker's
    own threads when both want it (``LuaSandbox.Nice``; a tenant's scripts can be made to yield).

    ``bounds`` adds what neither deadline sees: the wall-clock time, built-ins included, and the
    number of built-in and nested calls of one top-level call; and the wait for a busy process.
    """

    soft_cpu_s: float = 10.0
    hard_timeout_s: float = 15.0
    memory_kb: int = 262144
    address_space_mb: int = 1024
    cpu_lifetime_s: int = 86400
    open_files: int = 32
    max_frame: int = DEFAULT_MAX_FRAME
    max_log_lines: int = 1000
    nice: int = 0
    bounds: CallBounds = CallBounds()

    def __post_init__(self) -> None:
        if self.soft_cpu_s <= 0 or self.hard_timeout_s <= 0:
            raise ValueError("Limits: soft_cpu_s and hard_timeout_s must be positive")
        if self.address_space_mb < 16:
            raise ValueError(f"Limits: address_space_mb={self.address_space_mb}; lua5.4 needs at least 16")
        if self.open_files < 4:
            raise ValueError(f"Limits: open_files={self.open_files}; the shim needs at least 4")
        if not 0 <= self.nice <= 19:
            raise ValueError(f"Limits: nice={self.nice}; expected 0 to 19")

    def hard_timeout_for(self, cpu_s: float | None) -> float:
        """Hard deadline of a call whose soft limit is ``cpu_s``.

        A call that asks for a longer soft budget than the default gets the hard deadline pushed back by
        the same amount, so the soft limit always fires first; a shorter one keeps the default.
        """
        if cpu_s is None:
            return self.hard_timeout_s
        return self.hard_timeout_s + max(0.0, cpu_s - self.soft_cpu_s)


@dataclass(frozen=True)
class BackoffPolicy:
    """When to restart a lost process, and when to stop trying for a while (circuit breaker).

    The n-th failure within ``window_s`` waits ``next_delay(n - 1)``: the first restart is immediate
    (``initial_s``), then ``base_s``, doubling (``factor``) up to ``cap_s``, minus up to ``jitter`` of it.
    The ``max_failures``-th failure within ``window_s`` quarantines the sandbox for ``cooldown_s``; after
    that one restart is tried, and a failure before the next successful call quarantines it again.
    A call that finds the sandbox restarting waits at most ``max_call_wait_s`` for it.
    """

    initial_s: float = 0.0
    base_s: float = 0.1
    factor: float = 2.0
    cap_s: float = 5.0
    jitter: float = 0.2
    max_failures: int = 5
    window_s: float = 60.0
    cooldown_s: float = 30.0
    max_call_wait_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"BackoffPolicy: jitter={self.jitter}; expected between 0 and 1")
        if self.max_failures < 1:
            raise ValueError(f"BackoffPolicy: max_failures={self.max_failures}; expected at least 1")
        if min(self.initial_s, self.base_s, self.cap_s, self.window_s, self.cooldown_s) < 0 or self.factor < 1:
            raise ValueError("BackoffPolicy: delays must be non-negative and factor at least 1")


def next_delay(attempt: int, policy: BackoffPolicy, rand: float) -> float:
    """Seconds to wait before restart number ``attempt`` (0-based) of a burst of failures.

    ``rand`` is a number in [0, 1) supplied by the caller (``random.random()`` in production), which keeps
    this function pure. Jitter only shortens a delay, so ``cap_s`` is a true upper bound.
    """
    if attempt <= 0:
        delay = policy.initial_s
    else:
        delay = min(policy.cap_s, policy.base_s * policy.factor ** min(attempt - 1, 64))
    return delay * (1.0 - policy.jitter * min(max(rand, 0.0), 1.0))
