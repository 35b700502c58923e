"""Spawn one sandbox child and kill it: nothing about frames or supervision.

The child is ``<interpreter> -E <shim> [flags]`` started from an empty temporary directory, with an empty
environment, no inherited descriptors but stdin/stdout (the frame pipes) and stderr (captured into a
capped ring buffer, never parsed), in a new session so that ``killpg(SIGKILL)`` takes down anything it
may have started.

Containment is a list of ``Layer`` objects applied in order to a ``SpawnSpec``. Today there is one,
``RlimitLayer``; OS isolation (bubblewrap, uid drop, seccomp, Landlock) will be further layers that
wrap the argv, add a pre-exec step or Popen options, without changing this module's callers.
"""
from __future__ import annotations

import atexit
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from sandbox.errors import SandboxError
from sandbox.limits import Limits

#: Interpreters tried, in order, when the configuration names none.
DEFAULT_INTERPRETERS = ("lua5.4", "lua5.3", "lua")
#: The shim shipped with this repository.
DEFAULT_SHIM = Path(__file__).resolve().parent.parent / "lua-runtime" / "shim.lua"
#: Bytes of the child's stderr kept for error messages and status.
STDERR_TAIL_BYTES = 8192


def find_interpreter(configured: str | None = None) -> str:
    """Absolute path of the Lua interpreter: ``configured`` (a name or a path) or the first default found.

    Resolved here, in the parent, because the child gets an empty environment (no PATH).
    """
    candidates = (configured,) if configured else DEFAULT_INTERPRETERS
    for name in candidates:
        found = shutil.which(name)
        if found:
            return os.path.abspath(found)
    wanted = configured or " or ".join(DEFAULT_INTERPRETERS)
    raise SandboxError(f"no Lua interpreter found: {wanted} is not an executable file or on PATH")


@dataclass(frozen=True)
class SpawnSpec:
    """Everything ``subprocess.Popen`` needs to start a child; layers return modified copies."""

    argv: tuple[str, ...]
    cwd: str
    env: dict[str, str] = field(default_factory=dict)
    #: Run in the child between fork and exec, in order (after ``setsid``).
    preexec: tuple[Callable[[], None], ...] = ()
    #: Extra keyword arguments for Popen (``user``, ``group``, ``extra_groups``, ...).
    popen_kwargs: dict[str, Any] = field(default_factory=dict)


class Layer(Protocol):
    """One containment layer. ``apply`` must not touch the pipes, session or fd-closing settings."""

    name: str

    def apply(self, spec: SpawnSpec) -> SpawnSpec: ...


@dataclass(frozen=True)
class RlimitLayer:
    """Kernel resource limits: address space, lifetime CPU, open files, no file output, no core dumps.

    Set with ``setrlimit`` in the child before exec (``preexec_fn``). Each value is clamped to the
    parent's hard limit, since an unprivileged process cannot raise it.
    """

    limits: Limits
    name: str = "rlimits"

    def rlimits(self) -> dict[int, tuple[int, int]]:
        address_space = self.limits.address_space_mb * 1024 * 1024
        cpu = int(self.limits.cpu_lifetime_s)
        return {
            resource.RLIMIT_AS: (address_space, address_space),
            # soft < hard: SIGXCPU first (terminates, no core since CORE=0), SIGKILL at hard.
            resource.RLIMIT_CPU: (cpu, cpu + 5),
            resource.RLIMIT_NOFILE: (self.limits.open_files, self.limits.open_files),
            resource.RLIMIT_FSIZE: (0, 0),
            resource.RLIMIT_CORE: (0, 0),
        }

    def apply(self, spec: SpawnSpec) -> SpawnSpec:
        wanted = self.rlimits()

        def set_rlimits() -> None:
            for which, (soft, hard) in wanted.items():
                _, current_hard = resource.getrlimit(which)
                if current_hard != resource.RLIM_INFINITY:
                    hard = min(hard, current_hard)
                    soft = min(soft, hard)
                resource.setrlimit(which, (soft, hard))

        return replace(spec, preexec=spec.preexec + (set_rlimits,))


def default_layers(limits: Limits) -> list[Layer]:
    return [RlimitLayer(limits)]


class _StderrTail:
    """Drain the child's stderr on a thread into a bounded buffer (a chatty child never blocks on it)."""

    def __init__(self, fd: int, cap: int = STDERR_TAIL_BYTES) -> None:
        self._fd = fd
        self._cap = cap
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._drain, name="sandbox-stderr", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        try:
            while True:
                chunk = os.read(self._fd, 4096)
                if not chunk:
                    break
                with self._lock:
                    self._buffer += chunk
                    if len(self._buffer) > self._cap:
                        del self._buffer[: len(self._buffer) - self._cap]
        except OSError:
            pass
        finally:
            os.close(self._fd)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def text(self) -> str:
        with self._lock:
            return self._buffer.decode("utf-8", "replace")


class ChildProcess:
    """One running sandbox child. Owns its pipes, its working directory and its process group."""

    def __init__(self, spec: SpawnSpec, layer_names: Sequence[str], workdir: str) -> None:
        preexec = spec.preexec

        def run_preexec() -> None:
            for step in preexec:
                step()

        self.argv = spec.argv
        self.layers: tuple[str, ...] = tuple(layer_names)
        self._workdir = workdir
        self._popen = subprocess.Popen(
            list(spec.argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=spec.cwd,
            env=dict(spec.env),
            close_fds=True,
            start_new_session=True,
            preexec_fn=run_preexec if preexec else None,
            bufsize=0,
            **spec.popen_kwargs,
        )
        self.pid: int = self._popen.pid
        self.started_at = time.time()
        self.started_monotonic = time.monotonic()
        assert self._popen.stdin is not None and self._popen.stdout is not None
        assert self._popen.stderr is not None
        # The channel works on raw fds (poll + os.read/os.write). Own duplicates, so exactly one owner
        # closes each, and only when the channel says so (an fd number closed under a reader's feet
        # could be reused by an unrelated file).
        self.stdin_fd: int | None = os.dup(self._popen.stdin.fileno())
        self.stdout_fd: int | None = os.dup(self._popen.stdout.fileno())
        stderr_fd = os.dup(self._popen.stderr.fileno())
        for stream in (self._popen.stdin, self._popen.stdout, self._popen.stderr):
            stream.close()
        self._stderr = _StderrTail(stderr_fd)
        self._lock = threading.Lock()
        _LIVE.add(self)

    @classmethod
    def spawn(cls, interpreter: str, shim: str, flags: Sequence[str], layers: Sequence[Layer]) -> "ChildProcess":
        """Start ``interpreter -E shim flags`` with every layer applied. Raises ``OSError`` on failure."""
        workdir = tempfile.mkdtemp(prefix="luabroker-sandbox-")
        try:
            os.chmod(workdir, 0o500)  # empty and not writable (for a non-root child)
            spec = SpawnSpec(argv=(interpreter, "-E", os.path.abspath(shim), *flags), cwd=workdir)
            for layer in layers:
                spec = layer.apply(spec)
            return cls(spec, [layer.name for layer in layers], workdir)
        except BaseException:
            _remove_workdir(workdir)
            raise

    @property
    def returncode(self) -> int | None:
        """The exit status once reaped (negative: killed by that signal), else ``None``."""
        return self._popen.returncode

    def poll(self) -> int | None:
        return self._popen.poll()

    def stderr_tail(self) -> str:
        return self._stderr.text()

    def close_stdin(self) -> None:
        """Tell the shim to finish: it exits when its input ends. Only the channel's owner calls this."""
        with self._lock:
            fd, self.stdin_fd = self.stdin_fd, None
        if fd is not None:
            os.close(fd)

    def release_pipes(self) -> None:
        """Close both frame pipes. Only the channel's owner calls this (under the channel lock)."""
        self.close_stdin()
        with self._lock:
            fd, self.stdout_fd = self.stdout_fd, None
        if fd is not None:
            os.close(fd)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the exit; ``None`` if still running after ``timeout``.

        Once the child has exited, whatever else is left in its process group is killed too (the
        leader is still an unreaped zombie then, so its group id cannot have been reused).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._exited():
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(0.005)
        return self.kill()

    def _exited(self) -> bool:
        """Has the child exited? Does not reap it."""
        if self._popen.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None
        except ChildProcessError:
            return True

    def kill(self) -> int:
        """SIGKILL the whole process group and reap the child. Idempotent, safe from any thread.

        The pipes stay open: a thread reading them sees EOF and the channel closes them.
        """
        if self._popen.returncode is None:
            # Not reaped yet, so the group id cannot have been reused by another process.
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        code = self._popen.wait()
        self._after_exit()
        return code

    def describe_exit(self) -> str:
        code = self.returncode
        if code is None:
            return "is still running"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"was killed by {name}"
        return f"exited with status {code}"

    def _after_exit(self) -> None:
        _LIVE.discard(self)
        # Whatever is left in the pipe arrives within a moment of the exit; keep the tail complete.
        self._stderr.join(0.2)
        _remove_workdir(self._workdir)


#: Children not yet reaped, killed when the broker exits so no process or directory is left behind.
_LIVE: "weakref.WeakSet[ChildProcess]" = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for child in list(_LIVE):
        if child.returncode is None:
            child.kill()


def _remove_workdir(path: str) -> None:
    try:
        os.chmod(path, 0o700)
    except OSError:
        pass
    shutil.rmtree(path, ignore_errors=True)
