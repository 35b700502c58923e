"""Fixtures of the security suite: real ``Sandbox`` objects on the product's shim, with small limits.

Every sandbox gets the default isolation (every OS layer the host allows) unless a test asks for
another one, and is stopped after the test.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from sandbox import BackoffPolicy, CallInfo, Isolation, Limits, Sandbox, SandboxConfig, ScriptSource
from sandbox.process import DEFAULT_SHIM
from tests.security.security_helpers import BACKOFF, LIMITS


class Rpc:
    """An rpc handler that answers every built-in with ``handlers[name](args)`` or echoes args[0]."""

    def __init__(self) -> None:
        self.handlers: dict[str, Callable[[list], Any]] = {}
        self.logs: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, builtin: str, args: list, info: CallInfo) -> Any:
        handler = self.handlers.get(builtin)
        return handler(args) if handler else (args[0] if args else None)

    def on_log(self, name: str, level: str, text: str) -> None:
        with self._lock:
            self.logs.append((name, level, text))


@pytest.fixture
def rpc() -> Rpc:
    return Rpc()


@pytest.fixture
def make_sandbox(rpc: Rpc):
    """``make_sandbox(source, **config)``: a started Sandbox on the real shim (``start=False`` to not start)."""
    made: list[Sandbox] = []

    def make(*sources: str, name: str = "tenant-a", limits: Limits = LIMITS, backoff: BackoffPolicy = BACKOFF,
             isolation: Isolation | None = None, shim: str | None = None, start: bool = True,
             **extra: Any) -> Sandbox:
        scripts = tuple(ScriptSource(f"script{i}.lua", s) for i, s in enumerate(sources, 1))
        config = SandboxConfig(name=name, role="main", scripts=scripts, shim=shim or str(DEFAULT_SHIM),
                               limits=limits, backoff=backoff, isolation=isolation or Isolation(), **extra)
        sandbox = Sandbox(config, rpc, rpc.on_log)
        made.append(sandbox)
        if start:
            sandbox.start()
        return sandbox

    yield make
    for sandbox in made:
        sandbox.stop()
