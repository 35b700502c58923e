"""Fixtures for the sandbox tests: real lua5.4 children running the fake shims in ``shims/``."""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from sandbox import BackoffPolicy, CallInfo, Isolation, Limits, Sandbox, SandboxConfig, ScriptSource
from sandbox.process import DEFAULT_SHIM
from tests.support.sandboxes import FAKE_SHIM


@dataclass
class Recorder:
    """An rpc handler that records what it was asked and delegates to per-builtin functions."""

    handlers: dict[str, Callable[[list, CallInfo], Any]] = field(default_factory=dict)
    calls: list[tuple[str, list, CallInfo]] = field(default_factory=list)
    logs: list[tuple[str, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, builtin: str, args: list, info: CallInfo) -> Any:
        with self.lock:
            self.calls.append((builtin, args, info))
        handler = self.handlers.get(builtin)
        if handler is None:
            return args[0] if args else None
        return handler(args, info)

    def on_log(self, name: str, level: str, text: str) -> None:
        with self.lock:
            self.logs.append((name, level, text))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_sandbox(recorder: Recorder):
    """``make_sandbox(*scripts, **config)``: build (not start) a Sandbox on the fake shim; stopped afterwards.

    The fake shim runs without OS isolation (it uses io.popen and os.exit to misbehave on cue); the
    product's shim gets the default isolation (every layer the host allows) unless a test says otherwise.
    """
    made: list[Sandbox] = []

    def make(*scripts: str | tuple[str, str], shim: str = FAKE_SHIM, limits: Limits | None = None,
             backoff: BackoffPolicy | None = None, name: str = "test", isolation: Isolation | None = None,
             **extra: Any) -> Sandbox:
        sources = tuple(ScriptSource(*s) if isinstance(s, tuple) else ScriptSource(f"script{i}.lua", s)
                        for i, s in enumerate(scripts, 1))
        if isolation is None:
            isolation = Isolation() if shim == str(DEFAULT_SHIM) else Isolation.none()
        config = SandboxConfig(name=name, role="main", scripts=sources, shim=shim, isolation=isolation,
                               limits=limits or Limits(), backoff=backoff or BackoffPolicy(), **extra)
        sandbox = Sandbox(config, recorder, recorder.on_log)
        made.append(sandbox)
        return sandbox

    yield make
    for sandbox in made:
        sandbox.stop()
