"""A minimal driver for the Lua runtime: a real ``lua5.4 -E lua-runtime/shim.lua`` on pipes.

This is test scaffolding, not the broker's channel (``sandbox/channel.py``): it writes one message,
then reads frames until the matching result, answering rpcs with a handler on the way. A handler can
itself call or load, which is how nested calls are tested.
"""
from __future__ import annotations

import itertools
import select
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.framing import encode_frame, read_frame
from sandbox.messages import Log, Ready, Result, Rpc, call_message, decode_incoming, load_message, reply_message

RUNTIME = Path(__file__).resolve().parents[2] / "lua-runtime"
LUA = shutil.which("lua5.4") or "/usr/bin/lua5.4"
#: Seconds a test waits for a frame before it declares the shim hung: generous, since it costs nothing when
#: the frame comes, and a loaded machine may run a call (up to its CPU budget) several times slower.
FRAME_TIMEOUT = 60.0

RpcHandler = Callable[[Rpc], tuple[bool, Any]]


@dataclass
class Outcome:
    """The result of one call or load, with the log frames and rpcs seen while waiting for it."""

    ok: bool
    value: Any
    logs: list[Log] = field(default_factory=list)
    rpcs: list[Rpc] = field(default_factory=list)
    #: The new list of script-defined functions the result carried (None: unchanged).
    functions: tuple[str, ...] | None = None

    @property
    def printed(self) -> list[str]:
        return [log.text for log in self.logs if log.level == "print"]


def no_rpc(rpc: Rpc) -> tuple[bool, Any]:
    raise AssertionError(f"unexpected rpc {rpc}")


class Shim:
    def __init__(self, *flags: str) -> None:
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [LUA, "-E", str(RUNTIME / "shim.lua"), *flags],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env={}, cwd=tempfile.gettempdir())
        self._ids = itertools.count(1)
        ready = self.receive()
        assert isinstance(ready, Ready), ready
        self.ready = ready.info

    def send(self, message: Any) -> None:
        self.process.stdin.write(encode_frame(message))
        self.process.stdin.flush()

    def receive(self, timeout: float = FRAME_TIMEOUT) -> Any:
        readable, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not readable:
            raise TimeoutError(f"no frame from the shim within {timeout} s; stderr: {self.stderr()}")
        return decode_incoming(read_frame(self.process.stdout.fileno()))

    def call(self, function: str, *args: Any, keep_strings: bool = False, cpu: float = 2.0,
             on_rpc: RpcHandler = no_rpc) -> Outcome:
        call_id = next(self._ids)
        self.send(call_message(call_id, function, list(args), {"keepStrings": keep_strings, "cpu": cpu}))
        return self._await(call_id, on_rpc)

    def load(self, source: str | bytes, chunkname: str = "line", on_rpc: RpcHandler = no_rpc) -> Outcome:
        call_id = next(self._ids)
        self.send(load_message(call_id, source, chunkname))
        return self._await(call_id, on_rpc)

    def run(self, source: str) -> list[str]:
        """Load ``source`` like execute-script does and return what it printed."""
        outcome = self.load(source)
        assert outcome.ok, outcome.value
        return outcome.printed

    def _await(self, call_id: int, on_rpc: RpcHandler) -> Outcome:
        logs: list[Log] = []
        rpcs: list[Rpc] = []
        while True:
            message = self.receive()
            if isinstance(message, Log):
                logs.append(message)
            elif isinstance(message, Rpc):
                rpcs.append(message)
                ok, value = on_rpc(message)
                self.send(reply_message(message.id, ok, value))
            elif isinstance(message, Result) and message.id == call_id:
                return Outcome(message.ok, message.value, logs, rpcs, message.functions)
            else:
                raise AssertionError(f"unexpected message while waiting for {call_id}: {message}")

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def wait(self, timeout: float = FRAME_TIMEOUT) -> int:
        return self.process.wait(timeout)

    def close(self) -> None:
        try:
            self.process.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.process.wait(FRAME_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self._stderr.close()
