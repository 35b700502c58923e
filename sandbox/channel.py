"""The broker's end of one child's pipes: the only writer of ``call`` and ``load`` frames.

A call writes its frame, then reads until the matching ``result``. Meanwhile the child may ask for
built-ins (``rpc``): the handler runs on the calling thread and may itself call into this same channel
(nested call: the shim serves it while it waits for the ``reply``), which is why the lock is an
``RLock``. Threads other than the holder wait; calls into one process are mutually exclusive.

The hard deadline of a call is the time the *child* works on it: the clock stops while an rpc handler
runs (the broker is working then, possibly on a nested call that has its own deadline). On expiry, on
EOF, on a malformed or oversized frame or a message of the wrong shape, the process group is killed and
the channel is dead for good: every call still on its stack raises, and a new call raises
``ChannelClosed`` before writing anything (so the owner can retry it on a fresh process).

Every call also runs under the budget of its top-level call (``sandbox.budget``): a wall-clock time
that counts the built-ins, and caps on built-in calls and nested calls. The channel that opened the
budget reads with its wall-clock deadline (past it, the process is killed); a built-in asked for once
the budget is spent is answered with the reason and a ``stop`` that ends the call in the shim.

A caller waits for a channel busy with another thread's call at most ``busy_timeout_s`` (cut to what
is left of its own budget), then gets ``SandboxBusy``: no request waits without bound on a script.

A call after which the shim says the Lua heap is still over its cap (``restart`` in the result: the
scripts keep more than the memory limit in their globals) ends normally; then, before the lock is
released, the process is killed and the channel is dead, so the owner restarts it cleanly.
"""
from __future__ import annotations

import array
import fcntl
import logging
import math
import os
import select
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NoReturn

from sandbox import budget as budgets
from sandbox.budget import KILL_GRACE_S, BudgetExceeded, CallBudget
from sandbox.errors import BuiltinError, LuaError, SandboxBusy, SandboxCrashed, SandboxError, SandboxTimeout
from sandbox.framing import DEFAULT_MAX_FRAME, ProtocolError, decode_payload, encode_frame
from sandbox.limits import CallBounds
from sandbox.messages import Log, Ready, Result, Rpc, call_message, decode_incoming, load_message, reply_message
from sandbox.process import ChildProcess

log = logging.getLogger("sandbox.channel")

_LENGTH = struct.Struct(">I")
_READ_CHUNK = 1 << 16
#: Deepest nesting of calls into one process (a callback whose built-in calls back into it, ...).
MAX_DEPTH = 32


@dataclass(frozen=True)
class CallInfo:
    """Who is asking, passed to the rpc handler with every built-in call.

    ``call_id`` and ``function`` are those of the innermost call in progress (the one whose Lua code made
    the rpc); ``depth`` is 1 for a top-level call, 2 for a call made from a handler of that call, etc.
    """

    sandbox: str
    role: str
    call_id: int
    function: str
    depth: int


RpcHandler = Callable[[str, list[Any], CallInfo], Any]
LogHandler = Callable[[str, str, str], None]
#: Called with the new list of script-defined global functions whenever the child reports one.
FunctionsHandler = Callable[["SandboxChannel", frozenset[str]], None]


class ChannelClosed(SandboxError):
    """The channel's process is gone; nothing was sent. The owner retries on a new process."""


class _Expired(Exception):
    pass


@dataclass
class _Active:
    """One call in progress on the channel's stack."""

    call_id: int
    function: str
    deadline: float
    timeout_s: float
    budget: CallBudget | None = None
    #: The budget's wall-clock deadline, for the calls of the channel that opened it (else ``inf``).
    wall_deadline: float = math.inf
    #: Why the call was told to stop (its budget is spent); it has ``KILL_GRACE_S`` to end.
    stopped: str | None = None
    prints: list[str] = field(default_factory=list)
    log_lines: int = 0
    dropped_lines: int = 0
    #: The whole call frame is in the pipe / the child answered anything to it (a frame of any kind).
    delivered: bool = False
    heard: bool = False


class _FrameReader:
    """Buffered, deadline-aware frame reader over a raw fd (poll, then read what is there)."""

    def __init__(self, fd: int, max_frame: int) -> None:
        self._fd = fd
        self._max_frame = max_frame
        self._buffer = bytearray()
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)

    def read(self, deadline: float) -> Any:
        """The next decoded frame. Raises ``_Expired``, ``EOFError`` or ``ProtocolError``."""
        while True:
            needed = 4
            if len(self._buffer) >= 4:
                (length,) = _LENGTH.unpack_from(self._buffer)
                if length > self._max_frame:
                    raise ProtocolError(f"frame of {length} bytes exceeds the maximum of {self._max_frame}")
                needed = 4 + length
                if len(self._buffer) >= needed:
                    payload = bytes(self._buffer[4:needed])
                    del self._buffer[:needed]
                    return decode_payload(payload, self._max_frame)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Expired()
            if not self._poll.poll(math.ceil(remaining * 1000)):
                continue
            chunk = os.read(self._fd, max(_READ_CHUNK, min(needed - len(self._buffer), 1 << 20)))
            if not chunk:
                if self._buffer:
                    raise ProtocolError(f"EOF in the middle of a frame ({len(self._buffer)} bytes buffered)")
                raise EOFError("the sandbox closed its output")
            self._buffer += chunk


class SandboxChannel:
    """Frames to and from one child process; see the module docstring for the rules."""

    def __init__(
        self,
        process: ChildProcess,
        *,
        name: str,
        role: str,
        rpc_handler: RpcHandler,
        on_log: LogHandler | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_log_lines: int = 1000,
        on_functions: FunctionsHandler | None = None,
        bounds: CallBounds = CallBounds(),
    ) -> None:
        if process.stdin_fd is None or process.stdout_fd is None:
            raise ChannelClosed("the process has no pipes")
        self.process = process
        self.name = name
        self.role = role
        self._rpc_handler = rpc_handler
        self._on_log = on_log
        self._max_frame = max_frame
        self._max_log_lines = max_log_lines
        self._on_functions = on_functions
        self.bounds = bounds
        #: Why the process must be restarted once its calls are over (the shim said so), if it must.
        self._restart_reason: str | None = None
        #: The script-defined global functions, as last reported by the child (loads and calls).
        self.functions: frozenset[str] = frozenset()
        self._lock = threading.RLock()
        self._stack: list[_Active] = []
        self._next_id = 1
        self._reader = _FrameReader(process.stdout_fd, max_frame)
        self._write_fd = process.stdin_fd
        os.set_blocking(self._write_fd, False)
        self._write_poll = select.poll()
        self._write_poll.register(self._write_fd, select.POLLOUT | select.POLLERR | select.POLLHUP)
        #: Builds the exception that every call on a dead channel raises (set once, never cleared).
        self._failure: Callable[[], SandboxError] | None = None

    # ----------------------------------------------------------------------------------------- state

    @property
    def alive(self) -> bool:
        return self._failure is None

    def failure(self) -> SandboxError | None:
        """Why the channel is dead (a fresh exception), or ``None`` while it is alive."""
        return None if self._failure is None else self._failure()

    @property
    def depth(self) -> int:
        return len(self._stack)

    @property
    def busy_with(self) -> str | None:
        """The function (or chunk) of the top-level call in progress, if any: for status pages."""
        stack = self._stack
        return stack[0].function if stack else None

    # ------------------------------------------------------------------------------------ operations

    def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        """Read the child's first frame, which must be ``ready`` (``log`` frames may come before it)."""
        with self._lock:
            self._check_open()
            active = _Active(0, "startup (waiting for 'ready')", time.monotonic() + timeout_s, timeout_s)
            self._stack.append(active)
            try:
                while True:
                    message = self._read(active)
                    if isinstance(message, Ready):
                        return message.info
                    if isinstance(message, Log):
                        self._log(message, active)
                        continue
                    self._protocol_error(f"expected 'ready' as the first message, got {message}")
            except BaseException as exc:
                self._desync(exc)
                raise
            finally:
                self._stack.pop()

    def call(self, function: str, args: list[Any], opts: dict[str, Any],
             timeout_s: float) -> tuple[bool, Any, list[str]]:
        """Call the global ``function``; returns ``(defined, value, prints)``. Raises ``LuaError`` if it raised."""
        with self._locked(function):
            result, active = self._request(lambda call_id: call_message(call_id, function, args, opts), function,
                                           timeout_s)
            if not result.ok:
                raise LuaError(_error_text(result.value), active.prints)
            match result.value:
                case {"defined": bool() as defined, **rest}:
                    return defined, rest.get("value"), active.prints
            self._protocol_error(f"malformed result of call {result.id}: {str(result.value)[:200]}")

    def load(self, source: str | bytes, chunkname: str, timeout_s: float,
             label: str | None = None) -> tuple[list[str], list[str]]:
        """Load and run a chunk; returns ``(global functions defined afterwards, prints)``. ``label``
        names the call (``busy_with``, ``CallInfo.function``) when the chunk name would not."""
        label = label or chunkname
        with self._locked(label):
            result, active = self._request(lambda call_id: load_message(call_id, source, chunkname), label,
                                           timeout_s)
            if not result.ok:
                raise LuaError(_error_text(result.value), active.prints)
            match result.value:
                case {"functions": list() as functions} if all(isinstance(f, str) for f in functions):
                    self._set_functions(functions)
                    return functions, active.prints
            self._protocol_error(f"malformed result of load {result.id}: {str(result.value)[:200]}")

    def close(self, grace_s: float) -> None:
        """Clean stop: close the child's stdin, let it exit within ``grace_s``, else kill it.

        If another thread is in a call, the process is killed without waiting for the lock (that call
        raises ``SandboxCrashed``).
        """
        if not self._lock.acquire(timeout=grace_s):
            self._mark_failed(lambda: SandboxCrashed(f"sandbox {self.name!r} was stopped during the call"))
            self.process.kill()
            return
        try:
            if self._failure is None:
                self._mark_failed(lambda: ChannelClosed("the sandbox was stopped"))
            self.process.close_stdin()
            if self.process.wait(grace_s) is None:
                self.process.kill()
            self.process.release_pipes()
        finally:
            self._lock.release()

    def kill(self, reason: str) -> None:
        """Kill the process now (owner-initiated); calls on the stack raise ``SandboxCrashed(reason)``."""
        with self._lock:
            if self._failure is None:
                self._mark_failed(lambda: SandboxCrashed(reason))
            self.process.kill()
            self.process.release_pipes()

    def reap_if_exited(self) -> bool:
        """Between calls: if the process has exited or is about to (killed from outside, by the
        kernel's OOM killer: a SIGKILL is pending), reap it, mark the channel dead and return True, so
        its owner restarts it before the next call needs it. Never waits for a call in progress: that
        call finds out by itself."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if self._stack or self._failure is not None or not self.process.doomed():
                return False
            process = self.process
            process.kill()  # reaps it, and whatever is left of its group
            self._mark_failed(lambda: SandboxCrashed(
                f"sandbox {self.name!r}: process {process.interpreter_pid} {process.describe_exit()} while idle",
                process.returncode, process.stderr_tail()))
            process.release_pipes()
            return True
        finally:
            self._lock.release()

    # ------------------------------------------------------------------------------------- internals

    @contextmanager
    def _locked(self, label: str) -> Iterator[None]:
        """Hold the channel for a call: at once on the thread that holds it (a nested call), else after
        at most ``bounds.busy_timeout_s`` (cut to what is left of this thread's budget)."""
        wait_s = budgets.bounded(self.bounds.busy_timeout_s)
        if not self._lock.acquire(timeout=max(0.0, wait_s)):
            holder = self._stack[0].function if self._stack else "another call"
            raise SandboxBusy(f"sandbox {self.name!r} is busy with {holder}; {label} waited {wait_s:g} s for it")
        try:
            yield
        finally:
            self._lock.release()

    def _request(self, build: Callable[[int], list[Any]], label: str, timeout_s: float) -> tuple[Result, _Active]:
        """Write a call or a load, serve the child until its result, under the thread's call budget."""
        self._check_open()
        if len(self._stack) >= MAX_DEPTH:
            raise SandboxError(f"calls into sandbox {self.name!r} nested deeper than {MAX_DEPTH}")
        bounds = self.bounds
        try:
            with budgets.scope(self, max(bounds.wall_s, timeout_s), bounds.max_builtin_calls,
                               bounds.max_nested_calls) as budget:
                return self._exchange(build, label, timeout_s, budget)
        except BudgetExceeded as exc:
            raise SandboxError(f"sandbox {self.name!r}: {label} refused: {exc}") from None

    def _exchange(self, build: Callable[[int], list[Any]], label: str, timeout_s: float,
                  budget: CallBudget) -> tuple[Result, _Active]:
        call_id = self._next_id
        self._next_id += 1
        frame = encode_frame(build(call_id))  # TypeError for unencodable args: nothing written
        if len(frame) - 4 > self._max_frame:
            raise SandboxError(f"arguments of {label} are {len(frame) - 4} bytes; the maximum is {self._max_frame}")
        active = _Active(call_id, label, time.monotonic() + timeout_s, timeout_s, budget,
                         budget.deadline if budget.owner is self else math.inf)
        self._stack.append(active)
        try:
            self._write(frame, active)
            active.delivered = True
            while True:
                message = self._read(active)
                active.heard = True
                match message:
                    case Result(id=result_id) if result_id == call_id:
                        if message.functions is not None:
                            self._set_functions(message.functions)
                        if message.restart is not None and self._restart_reason is None:
                            self._restart_reason = message.restart
                        return message, active
                    case Rpc():
                        self._serve_rpc(message, active)
                    case Log():
                        self._log(message, active)
                    case _:
                        self._protocol_error(f"unexpected {message} while waiting for the result of {call_id}")
        except BaseException as exc:
            self._desync(exc)
            raise
        finally:
            self._stack.pop()
            if active.dropped_lines:
                self._emit("warning", f"{active.dropped_lines} log lines of {label} dropped "
                                      f"(more than {self._max_log_lines})")
            if not self._stack and self._restart_reason is not None:
                self._retire(self._restart_reason)

    def _retire(self, reason: str) -> None:
        """The last call is over and the shim asked for a restart: kill the process while the lock is
        still held, so that no other call starts on it."""
        pid = self.process.interpreter_pid
        self._mark_failed(lambda: SandboxCrashed(f"sandbox {self.name!r}: {reason}; process {pid} restarted"))
        self.process.kill()
        self.process.release_pipes()

    def _set_functions(self, names: Any) -> None:
        self.functions = frozenset(names)
        if self._on_functions is not None:
            try:
                self._on_functions(self, self.functions)
            except Exception:
                log.exception("sandbox %s: on_functions callback failed", self.name)

    def _serve_rpc(self, rpc: Rpc, active: _Active) -> None:
        info = CallInfo(self.name, self.role, active.call_id, active.function, len(self._stack))
        spent = active.budget.count_builtin() if active.budget is not None else None
        started = time.monotonic()
        if spent is not None:
            ok, value = False, spent
        else:
            try:
                ok, value = True, self._rpc_handler(rpc.builtin, rpc.args, info)
            except BuiltinError as exc:
                ok, value = False, exc.message
            except Exception:
                if self._failure is None:
                    log.exception("sandbox %s: rpc handler for %s failed (call %d, %s)",
                                  self.name, rpc.builtin, active.call_id, active.function)
                ok, value = False, f"internal error in {rpc.builtin}"
            finally:
                active.deadline += time.monotonic() - started  # the broker's time is not the child's
            if self._failure is not None:
                # A nested call from the handler lost the process; this call is lost with it.
                raise self._failure()
            spent = active.budget.check_wall() if active.budget is not None else None
            if spent is not None:
                ok, value = False, spent  # what the built-in did stays done; the call ends here
        if spent is not None:
            # The shim ends the call (no pcall catches it); it gets a short grace to do so.
            active.deadline = time.monotonic() + KILL_GRACE_S
            active.wall_deadline = math.inf
            active.stopped = spent
            log.warning("sandbox %s: %s stopped: %s", self.name, active.function, spent)
        try:
            frame = encode_frame(reply_message(rpc.id, ok, value, stop=spent is not None))
        except (TypeError, ValueError, OverflowError):
            log.exception("sandbox %s: result of %s cannot be encoded", self.name, rpc.builtin)
            frame = encode_frame(reply_message(rpc.id, False, f"internal error in {rpc.builtin}"))
        if len(frame) - 4 > self._max_frame:
            frame = encode_frame(reply_message(
                rpc.id, False, f"result of {rpc.builtin} is too large ({len(frame) - 4} bytes, "
                               f"maximum {self._max_frame})"))
        self._write(frame, active)

    def _log(self, message: Log, active: _Active) -> None:
        if active.log_lines >= self._max_log_lines:
            active.dropped_lines += 1
            return
        active.log_lines += 1
        if message.level == "print":
            active.prints.append(message.text)
        self._emit(message.level, message.text)

    def _emit(self, level: str, text: str) -> None:
        if self._on_log is None:
            return
        try:
            self._on_log(self.name, level, text)
        except Exception:
            log.exception("sandbox %s: on_log callback failed", self.name)

    def _read(self, active: _Active) -> Any:
        fd_ok = self.process.stdout_fd is not None
        try:
            if not fd_ok:
                raise EOFError("the pipes are closed")
            return decode_incoming(self._reader.read(min(active.deadline, active.wall_deadline)))
        except _Expired:
            pid = self.process.interpreter_pid
            if active.stopped is not None:
                stopped = active.stopped
                self._fail(lambda: SandboxTimeout(
                    f"sandbox {self.name!r}: {active.function} did not stop within {KILL_GRACE_S:g} s after "
                    f"it was told to ({stopped}); process {pid} killed", KILL_GRACE_S))
            if active.wall_deadline <= active.deadline and active.budget is not None:
                wall_s = active.budget.wall_s
                self._fail(lambda: SandboxTimeout(
                    f"sandbox {self.name!r}: {active.function} exceeded the wall-clock limit of its call "
                    f"({wall_s:g} s, built-ins included); process {pid} killed", wall_s))
            self._fail(lambda: SandboxTimeout(
                f"sandbox {self.name!r}: {active.function} did not finish within {active.timeout_s:g} s; "
                f"process {pid} killed", active.timeout_s))
        except EOFError:
            self._fail_exited(active)
        except ProtocolError as exc:
            self._protocol_error(str(exc))
        except OSError as exc:
            reason = f"sandbox {self.name!r}: reading from the process failed: {exc}"
            self._fail(lambda: SandboxCrashed(reason))

    def _write(self, frame: bytes, active: _Active) -> None:
        view = memoryview(frame)
        while view:
            if self.process.stdin_fd is None:
                self._fail_exited(active)
            try:
                written = os.write(self._write_fd, view)
                view = view[written:]
                continue
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                self._fail_exited(active)
            except OSError as exc:
                reason = f"sandbox {self.name!r}: writing to the process failed: {exc}"
                self._fail(partial(SandboxCrashed, reason))
            remaining = active.deadline - time.monotonic()
            if remaining <= 0:
                self._fail(lambda: SandboxTimeout(
                    f"sandbox {self.name!r}: {active.function} did not read its input within "
                    f"{active.timeout_s:g} s; process {self.process.interpreter_pid} killed", active.timeout_s))
            self._write_poll.poll(math.ceil(remaining * 1000))

    def _fail_exited(self, active: _Active) -> NoReturn:
        """The child is gone. Its failure is a crash; but when it died before it read the top-level
        call's frame (killed while idle, just before the call), the call itself raises
        ``ChannelClosed``, as if nothing had been sent, so the owner runs it on the next process."""
        unread = self._unread_input()
        code = self.process.wait(1.0)
        if code is None:
            self.process.kill()
            what = "closed its output"
        else:
            what = self.process.describe_exit()
        process = self.process
        untouched = (self._failure is None and self._stack and active is self._stack[0] and active.call_id > 0
                     and not active.heard and (not active.delivered or unread > 0))
        if untouched:
            self._mark_failed(lambda: SandboxCrashed(
                f"sandbox {self.name!r}: process {process.interpreter_pid} {what} while idle",
                process.returncode, process.stderr_tail()))
            self.process.release_pipes()
            raise ChannelClosed(f"sandbox {self.name!r}: process {process.interpreter_pid} {what} before it read "
                                f"{active.function}")
        self._fail(lambda: SandboxCrashed(
            f"sandbox {self.name!r}: process {process.interpreter_pid} {what} during {active.function}",
            process.returncode, process.stderr_tail()))

    def _unread_input(self) -> int:
        """Bytes written to the child's stdin that it has not read (0 when unknown)."""
        fd = self.process.stdin_fd
        if fd is None:
            return 0
        count = array.array("i", [0])
        try:
            fcntl.ioctl(fd, termios.FIONREAD, count, True)  # on a pipe, either end tells
        except OSError:
            return 0
        return count[0]

    def _protocol_error(self, detail: str) -> NoReturn:
        pid = self.process.interpreter_pid
        self._fail(lambda: SandboxCrashed(f"sandbox {self.name!r}: protocol error from process {pid}: {detail}; "
                                          "process killed", self.process.returncode, self.process.stderr_tail()))

    def _fail(self, make: Callable[[], SandboxError]) -> NoReturn:
        """Kill the process, remember why, and raise. Never returns."""
        self._mark_failed(make)
        self.process.kill()
        self.process.release_pipes()
        assert self._failure is not None
        raise self._failure()

    def _mark_failed(self, make: Callable[[], SandboxError]) -> None:
        if self._failure is None:
            self._failure = make

    def _desync(self, exc: BaseException) -> None:
        """An exception left a call unfinished: the child is mid-protocol and cannot be trusted."""
        if self._failure is None:
            self._mark_failed(lambda: SandboxCrashed(f"sandbox {self.name!r}: call interrupted by {exc!r}"))
            self.process.kill()
            self.process.release_pipes()

    def _check_open(self) -> None:
        if self._failure is not None:
            raise ChannelClosed(f"sandbox {self.name!r}: process {self.process.interpreter_pid} is gone")


def _error_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return repr(value)
