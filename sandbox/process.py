"""Spawn one sandbox child and kill it: nothing about frames or supervision.

The child is ``<interpreter> -E <shim> [flags]`` started from an empty temporary directory, with an empty
environment, no inherited descriptors but stdin/stdout (the frame pipes) and stderr (captured into a
capped ring buffer, never parsed), in a new session so that ``killpg(SIGKILL)`` takes down anything it
may have started.

Containment is a list of ``Layer`` objects (``sandbox/layers.py``, chosen by ``sandbox/isolation.py``)
applied in order to a ``SpawnSpec``. A layer may wrap the argv (bubblewrap, the ``prlimit`` command),
add Popen options (the uid drop), descriptors to pass, a pre-exec step (Landlock, seccomp and unshare
when bubblewrap is not there), or a step run in the parent once the child exists (rlimits, with
``resource.prlimit``, when the broker may set another process's limits).

Order of events in ``ChildProcess.spawn``: Popen (fork on the spawner thread, the layers' pre-exec
steps, exec); the parent closes its copies of the descriptors it passed; it finds the interpreter's
pid (the child itself, or the process bubblewrap forks inside its namespaces) and runs every
``after_spawn`` step on it; only then does ``spawn`` return, so the channel has sent nothing yet.
Until its first frame arrives the shim runs only its own start-up (reading its modules, building the
environment, writing ``ready``): the limits are in place before any script byte reaches the child. If
any step after Popen fails, the child is killed and the error raised: a child never runs without the
layers it was planned with.
"""
from __future__ import annotations

import atexit
import math
import os
import queue
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sandbox.errors import SandboxError

#: Interpreters tried, in order, when the configuration names none.
DEFAULT_INTERPRETERS = ("lua5.4", "lua5.3", "lua")
#: The shim shipped with this repository.
DEFAULT_SHIM = Path(__file__).resolve().parent.parent / "lua-runtime" / "shim.lua"
#: Bytes of the child's stderr kept for error messages and status.
STDERR_TAIL_BYTES = 8192
#: How long ``kill`` lets bubblewrap exit by itself after its interpreter, to keep the real status.
WRAPPER_EXIT_S = 0.1
#: PATH of trusted processes (untrusted ones get an empty environment).
TRUSTED_PATH = "/usr/local/bin:/usr/bin:/bin"


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
class Spawned:
    """What the parent knows of a child it just started, handed to ``after_spawn`` steps.

    ``pid`` is the process Popen started (the process group leader); ``interpreter_pid`` is the Lua
    interpreter, the same process unless a wrapper (bubblewrap) forked it inside its namespaces.
    """

    pid: int
    interpreter_pid: int


@dataclass(frozen=True)
class SpawnSpec:
    """Everything ``subprocess.Popen`` needs to start a child; layers return modified copies."""

    argv: tuple[str, ...]
    cwd: str
    env: dict[str, str] = field(default_factory=dict)
    #: Run in the child between fork and exec, in order (after ``setsid`` and the uid drop). Only the
    #: fallback layers use it, with everything prepared in the parent: see ``sandbox/layers.py``.
    preexec: tuple[Callable[[], None], ...] = ()
    #: Extra keyword arguments for Popen (``user``, ``group``, ``extra_groups``).
    popen_kwargs: dict[str, Any] = field(default_factory=dict)
    #: Descriptors the child inherits (besides the pipes); the parent closes them once Popen returned.
    pass_fds: tuple[int, ...] = ()
    #: Descriptors the parent keeps for ``locate``; closed once the child is set up (or failed).
    parent_fds: tuple[int, ...] = ()
    #: Run in the parent right after Popen, in order, before anything is sent to the child.
    after_spawn: tuple[Callable[[Spawned], None], ...] = ()
    #: Finds the interpreter's pid from the Popen pid, when a wrapper forks it (bubblewrap).
    locate: Callable[[int], int] | None = None
    #: Name of the wrapper around the interpreter (its exit status stands for the interpreter's).
    wrapper: str | None = None
    #: A seccomp program a layer must install (bubblewrap's ``--seccomp``); spawning refuses a spec
    #: where it is still pending, so a filter is never silently dropped.
    pending_seccomp: bytes | None = None
    #: The child may write in its working directory (trusted mode); it is given to ``owner`` (uid, gid).
    writable_workdir: bool = False
    owner: tuple[int, int] | None = None


class Layer(Protocol):
    """One containment layer. ``apply`` must not touch the pipes, session or fd-closing settings."""

    @property
    def name(self) -> str: ...

    def apply(self, spec: SpawnSpec) -> SpawnSpec: ...


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


_T = TypeVar("_T")


class _Spawner:
    """Runs every Popen on one thread that lives as long as the broker.

    bubblewrap's ``--die-with-parent`` is ``PR_SET_PDEATHSIG``, which fires when the *thread* that
    forked the child exits, not the process. A sandbox started from a short-lived thread (an HTTP
    worker, the supervisor thread of a restart) would be SIGKILLed the moment that thread ends.
    Forking from one long-lived thread keeps the signal for what it is meant for: the broker's death.
    Spawns take milliseconds, so running them one at a time costs nothing noticeable.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], threading.Event, list[tuple[str, Any]]]] = \
            queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def run(self, job: Callable[[], _T]) -> _T:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="sandbox-spawner", daemon=True)
                self._thread.start()
        done = threading.Event()
        outcome: list[tuple[str, Any]] = []
        self._jobs.put((job, done, outcome))
        done.wait()
        kind, value = outcome[0]
        if kind == "error":
            raise value
        result: _T = value
        return result

    def _serve(self) -> None:
        while True:
            job, done, outcome = self._jobs.get()
            try:
                outcome.append(("ok", job()))
            except BaseException as exc:  # handed to the caller
                outcome.append(("error", exc))
            finally:
                done.set()
                del job, done, outcome


_SPAWNER = _Spawner()


class ChildProcess:
    """One running sandbox child. Owns its pipes, its working directory and its process group."""

    def __init__(self, spec: SpawnSpec, layer_names: Sequence[str], workdir: str) -> None:
        if spec.pending_seccomp is not None:
            _close_fds(spec.pass_fds + spec.parent_fds)
            raise SandboxError("a seccomp filter was planned but no layer installs it (bubblewrap missing "
                               "from the layers?); refusing to start the child without it")
        preexec = spec.preexec

        def run_preexec() -> None:
            for step in preexec:
                step()

        self.argv = spec.argv
        self.layers: tuple[str, ...] = tuple(layer_names)
        self.wrapper = spec.wrapper
        self._workdir = workdir
        self._pidfd: int | None = None
        try:
            self._popen = _SPAWNER.run(lambda: subprocess.Popen(
                list(spec.argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=spec.cwd,
                env=dict(spec.env),
                close_fds=True,
                pass_fds=spec.pass_fds,
                start_new_session=True,
                preexec_fn=run_preexec if preexec else None,
                bufsize=0,
                **spec.popen_kwargs,
            ))
        except BaseException:
            _close_fds(spec.parent_fds)
            raise
        finally:
            _close_fds(spec.pass_fds)
        self.pid: int = self._popen.pid
        #: The Lua interpreter (differs from ``pid`` under bubblewrap); set by ``_after_popen``.
        self.interpreter_pid: int = self.pid
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
        try:
            self._after_popen(spec)
        except Exception as exc:
            self.kill()
            tail = self.stderr_tail().strip()
            self.release_pipes()
            if tail:
                raise SandboxError(f"{exc}; the child's stderr: {tail[-500:]}") from exc
            raise
        except BaseException:
            self.kill()
            self.release_pipes()
            raise
        finally:
            _close_fds(spec.parent_fds)

    def _after_popen(self, spec: SpawnSpec) -> None:
        """Find the interpreter, hold a pidfd on it, and run the layers' parent-side steps."""
        if spec.locate is not None:
            self.interpreter_pid = spec.locate(self.pid)
        try:
            # Under bubblewrap the interpreter is not our child: a pidfd signals exactly it, never a
            # reused pid. In every case it becomes readable the moment the interpreter exits, which is
            # how the supervisor sees an idle process die without polling (``wait_any``).
            self._pidfd = os.pidfd_open(self.interpreter_pid)
        except OSError:
            self._pidfd = None
        spawned = Spawned(self.pid, self.interpreter_pid)
        for step in spec.after_spawn:
            step(spawned)

    @classmethod
    def spawn(cls, interpreter: str, shim: str, flags: Sequence[str], layers: Sequence[Layer], *,
              trusted: bool = False) -> ChildProcess:
        """Start ``interpreter -E shim flags`` with every layer applied. Raises ``OSError`` (or
        ``SandboxError`` when a layer cannot be applied) on failure.

        ``trusted``: the working directory is writable by the child and becomes its HOME and TMPDIR,
        and PATH is set, for the programs trusted scripts start (``io.popen``, ``os.execute``).
        """
        return cls.start((interpreter, "-E", os.path.abspath(shim), *flags), layers, trusted=trusted)

    @classmethod
    def start(cls, argv: Sequence[str], layers: Sequence[Layer], *, trusted: bool = False) -> ChildProcess:
        """Start ``argv`` (an interpreter command line) with every layer applied; see ``spawn``."""
        workdir = tempfile.mkdtemp(prefix="luabroker-sandbox-")
        try:
            os.chmod(workdir, 0o500)  # empty and not writable (for a non-root child)
            env = {"PATH": TRUSTED_PATH, "HOME": workdir, "TMPDIR": workdir} if trusted else {}
            spec = SpawnSpec(argv=tuple(argv), cwd=workdir, env=env, writable_workdir=trusted)
            for layer in layers:
                spec = layer.apply(spec)
            if spec.writable_workdir:
                if spec.owner is not None and os.geteuid() == 0:
                    os.chown(workdir, *spec.owner)
                os.chmod(workdir, 0o700)
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
        while not self.exited():
            remaining = 1.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return None
            wait_any([self], min(remaining, 1.0 if self._pidfd is not None else 0.005))
        return self.kill()

    def exited(self) -> bool:
        """Has the interpreter (or the process Popen started) exited? Does not reap it."""
        if self._popen.returncode is not None:
            return True
        with self._lock:
            if self._pidfd is not None and _readable([self._pidfd], 0):
                return True
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None
        except ChildProcessError:
            return True

    def doomed(self) -> bool:
        """Has the interpreter exited, or is a SIGKILL pending for it? A process killed while idle on a
        busy machine may not run for milliseconds; until it does, it would still take the next frame
        from its pipe and die with it, failing a call it never ran. Costs one read of /proc."""
        return self.exited() or _kill_pending(self.interpreter_pid)

    def watch_fd(self) -> int | None:
        """A duplicate of the interpreter's pidfd (readable once it exits), owned by the caller; None
        when the kernel gave none or the child is already reaped."""
        with self._lock:
            return os.dup(self._pidfd) if self._pidfd is not None else None

    def kill(self) -> int:
        """SIGKILL the whole process group and reap the child. Idempotent, safe from any thread.

        The pipes stay open: a thread reading them sees EOF and the channel closes them.
        """
        if self._pidfd is not None:
            # Under bubblewrap the interpreter is in its own session: the group kill does not reach
            # it (bubblewrap's --die-with-parent would, a moment later).
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except OSError:
                pass
            if self.wrapper is not None and self._popen.returncode is None:
                # bubblewrap exits right after its interpreter with the interpreter's status (128 + the
                # signal); killed first, it would report its own SIGKILL instead. Not reaped yet, so
                # its pid is still ours to open.
                try:
                    wrapper = os.pidfd_open(self.pid)
                except OSError:
                    pass
                else:
                    try:
                        _readable([wrapper], WRAPPER_EXIT_S)
                    finally:
                        os.close(wrapper)
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
            return f"was killed by {_signal_name(-code)}"
        if self.wrapper is not None and 128 < code < 128 + 65:
            # bubblewrap exits with 128 + n when the interpreter died of signal n.
            return f"was killed by {_signal_name(code - 128)} (exit status {code} from {self.wrapper})"
        return f"exited with status {code}"

    def _after_exit(self) -> None:
        _LIVE.discard(self)
        with self._lock:
            pidfd, self._pidfd = self._pidfd, None
        if pidfd is not None:
            os.close(pidfd)
        # Whatever is left in the pipe arrives within a moment of the exit; keep the tail complete.
        self._stderr.join(0.2)
        _remove_workdir(self._workdir)


def wait_any(processes: Sequence[ChildProcess], timeout_s: float) -> None:
    """Return once any of ``processes`` has exited, or after ``timeout_s``; sleeps the whole timeout
    when one of them cannot be watched (no pidfd), so callers check ``exited()`` afterwards anyway."""
    fds = [process.watch_fd() for process in processes]
    try:
        if fds and all(fd is not None for fd in fds):
            _readable([fd for fd in fds if fd is not None], timeout_s)
        else:
            time.sleep(timeout_s)
    finally:
        _close_fds([fd for fd in fds if fd is not None])


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` from the third on (the state, the parent, ...: field ``n`` is
    at index ``n - 3``; the command name before them may hold spaces and parentheses), or None when
    ``pid`` is gone."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 4096).rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    finally:
        os.close(fd)


def _kill_pending(pid: int) -> bool:
    """Whether SIGKILL is pending for ``pid``, from the pending-signal field (31) of ``/proc/<pid>/stat``
    (a fatal signal is queued on every thread: the field shows it)."""
    fields = stat_fields(pid)
    try:
        return fields is not None and bool(int(fields[28]) & 1 << (signal.SIGKILL - 1))
    except (IndexError, ValueError):
        return False


def _readable(fds: Sequence[int], timeout_s: float) -> bool:
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return bool(poller.poll(math.ceil(timeout_s * 1000)))


#: Children not yet reaped, killed when the broker exits so no process or directory is left behind.
_LIVE: weakref.WeakSet[ChildProcess] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for child in list(_LIVE):
        if child.returncode is None:
            child.kill()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _close_fds(fds: Sequence[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _remove_workdir(path: str) -> None:
    try:
        os.rmdir(path)  # the usual case, one system call: an untrusted child cannot write in it
        return
    except OSError:
        pass
    try:
        os.chmod(path, 0o700)
    except OSError:
        pass
    shutil.rmtree(path, ignore_errors=True)
