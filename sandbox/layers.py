"""The containment layers, one class each: what it does to a ``SpawnSpec`` and how it is probed.

Each layer has a ``name`` (shown in ``Sandbox.status()["layers"]``), ``apply(spec) -> spec`` and a
``describe()`` line for the start-up log. Which layers a sandbox gets, in which order, and whether the
host allows them is decided by ``sandbox/isolation.py``; the static ``probe_*`` functions here answer
"can this layer work at all on this host, and if not, why".

    rlimits     resource.prlimit on the interpreter right after spawn       always
    user        Popen(user=, group=, extra_groups=[]): a dedicated uid      broker runs as root
    bubblewrap  namespaces, read-only /usr and shim, no writable mount       bwrap works here
    seccomp     deny-list; via bubblewrap's --seccomp, else a pre-exec step  libseccomp loads
    landlock    read-only /usr + shim, nothing else (no bubblewrap)          kernel has Landlock
    unshare     new user, network, IPC and UTS namespaces (no bubblewrap)    user namespaces work

The fallback layers (landlock, unshare, seccomp without bubblewrap) run as pre-exec steps. CPython warns
that ``preexec_fn`` can deadlock a threaded parent; each step here is made of raw system calls on
buffers and descriptors prepared in the parent (no allocation, no lock, no import), which is the case
that warning does not cover. With bubblewrap, nothing runs between fork and exec.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import grp
import json
import os
import pwd
import resource
import select
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from sandbox import landlock, seccomp
from sandbox.errors import SandboxError
from sandbox.limits import Limits
from sandbox.memory import parent_pid
from sandbox.process import Layer, Spawned, SpawnSpec

#: RLIMIT_NPROC for trusted scripts (``io.popen``/``os.execute``) when they run under a dedicated uid.
#: The kernel counts every process of that uid on the host, other sandboxes' included.
TRUSTED_MAX_PROCESSES = 256
#: How long the broker waits for bubblewrap to report and fork the interpreter.
LOCATE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Probe:
    """Whether a layer can work on this host: ``detail`` says what was found, or why not."""

    available: bool
    detail: str


# ------------------------------------------------------------------------------------------ rlimits


@dataclass(frozen=True)
class RlimitLayer:
    """Kernel resource limits on the interpreter, set from the parent, never in a pre-exec step.

    Address space, lifetime CPU, open files, file size (0: no file output; trusted scripts get
    ``file_size_bytes``), no core dumps, and ``processes`` (RLIMIT_NPROC) only when the child runs
    under a dedicated uid: the kernel ignores it for root and counts every process of the uid.
    Each value is clamped to the current hard limit (inherited from the broker).

    Two ways, chosen by ``isolation.plan``:
      * ``resource.prlimit(interpreter_pid, ...)`` right after spawn (``via_command=False``), when the
        broker may change the child's limits: same uid, or CAP_SYS_RESOURCE;
      * else (the usual case of a root broker without CAP_SYS_RESOURCE, as in Docker or on this
        project's CI: the kernel refuses prlimit on another uid's process) util-linux's ``prlimit``
        command is put in front of the interpreter (inside bubblewrap when it wraps it): it sets the
        limits on itself and execs the interpreter, so the limits are there before its first
        instruction. It costs about 1.5 ms per spawn.
    """

    limits: Limits
    file_size_bytes: int = 0
    processes: int | None = None
    via_command: bool = False
    name: str = "rlimits"

    def rlimits(self) -> dict[int, tuple[int, int]]:
        address_space = self.limits.address_space_mb * 1024 * 1024
        cpu = int(self.limits.cpu_lifetime_s)
        wanted = {
            resource.RLIMIT_AS: (address_space, address_space),
            # soft < hard: SIGXCPU first (terminates, no core since CORE=0), SIGKILL at hard.
            resource.RLIMIT_CPU: (cpu, cpu + 5),
            resource.RLIMIT_NOFILE: (self.limits.open_files, self.limits.open_files),
            resource.RLIMIT_FSIZE: (self.file_size_bytes, self.file_size_bytes),
            resource.RLIMIT_CORE: (0, 0),
        }
        if self.processes is not None:
            wanted[resource.RLIMIT_NPROC] = (self.processes, self.processes)
        return wanted

    def apply(self, spec: SpawnSpec) -> SpawnSpec:
        if self.limits.nice:  # coreutils' nice execs the rest: any uid may lower its own priority
            spec = replace(spec, argv=(find_nice(), "-n", str(self.limits.nice), *spec.argv))
        wanted = self.rlimits()
        if self.via_command:
            command = find_prlimit()
            if command is None:
                raise SandboxError("util-linux's prlimit command is not installed")
            options = []
            for which, (soft, hard) in wanted.items():
                _, current_hard = resource.getrlimit(which)
                if current_hard != resource.RLIM_INFINITY:
                    hard = min(hard, current_hard)
                    soft = min(soft, hard)
                options.append(f"--{_PRLIMIT_OPTIONS[which]}={soft}:{hard}")
            return replace(spec, argv=(command, *options, "--", *spec.argv))

        def set_rlimits(child: Spawned) -> None:
            for which, (soft, hard) in wanted.items():
                _, current_hard = resource.prlimit(child.interpreter_pid, which)
                if current_hard != resource.RLIM_INFINITY:
                    hard = min(hard, current_hard)
                    soft = min(soft, hard)
                resource.prlimit(child.interpreter_pid, which, (soft, hard))

        return replace(spec, after_spawn=spec.after_spawn + (set_rlimits,))

    def describe(self) -> str:
        nproc = "" if self.processes is None else f", NPROC {self.processes}"
        how = "prlimit command before exec" if self.via_command else "prlimit() after spawn"
        nice = f", nice {self.limits.nice}" if self.limits.nice else ""
        return (f"rlimits (AS {self.limits.address_space_mb} MiB, NOFILE {self.limits.open_files}, "
                f"FSIZE {self.file_size_bytes}, CORE 0{nproc}{nice}; {how})")


_PRLIMIT_OPTIONS = {resource.RLIMIT_AS: "as", resource.RLIMIT_CPU: "cpu", resource.RLIMIT_NOFILE: "nofile",
                    resource.RLIMIT_FSIZE: "fsize", resource.RLIMIT_CORE: "core", resource.RLIMIT_NPROC: "nproc"}
_CAP_SYS_RESOURCE = 24


def _find_command(name: str) -> str | None:
    """``name`` on ``PATH``, else in ``/usr/bin`` (a broker started with a bare ``PATH``)."""
    return shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)


def find_nice() -> str:
    """coreutils' ``nice``, which every Debian has (``Limits.nice``)."""
    found = _find_command("nice")
    if found is None:
        raise SandboxError("coreutils' nice command is not installed (LuaSandbox.Nice)")
    return found


def find_prlimit() -> str | None:
    return _find_command("prlimit")


def can_prlimit(child_uid: int | None) -> bool:
    """May this process change the limits of a child running as ``child_uid`` (None: our own uid)?"""
    if child_uid is None or child_uid == os.getuid():
        return True
    for line in _read("/proc/self/status").splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> _CAP_SYS_RESOURCE & 1)
    return False


def probe_rlimits(child_uid: int | None) -> tuple[Probe, bool]:
    """How the limits will be set: ``(probe, via_command)``."""
    if can_prlimit(child_uid) and hasattr(resource, "prlimit"):
        return Probe(True, "resource.prlimit() on the interpreter right after spawn"), False
    if find_prlimit() is not None:
        return Probe(True, f"util-linux prlimit before the interpreter's exec (no CAP_SYS_RESOURCE to set "
                           f"the limits of uid {child_uid} from the broker)"), True
    return Probe(False, f"cannot set the limits of uid {child_uid}: no CAP_SYS_RESOURCE and no prlimit "
                        "command (Debian: util-linux)"), False


# --------------------------------------------------------------------------------------------- user


@dataclass(frozen=True)
class UserLayer:
    """Run the child (bubblewrap itself, when it wraps the interpreter) as ``uid:gid``, no groups."""

    uid: int
    gid: int
    name: str = "user"

    def apply(self, spec: SpawnSpec) -> SpawnSpec:
        kwargs = dict(spec.popen_kwargs, user=self.uid, group=self.gid, extra_groups=[])
        return replace(spec, popen_kwargs=kwargs, owner=(self.uid, self.gid))

    def describe(self) -> str:
        return f"user (uid {self.uid}, gid {self.gid}, no supplementary groups)"


def resolve_user(user: str | int, group: str | int | None) -> tuple[int, int]:
    """``(uid, gid)`` of a user name or number; the group defaults to the user's primary group."""
    try:
        if isinstance(user, int) or str(user).isdigit():
            uid = int(user)
            try:
                primary = pwd.getpwuid(uid).pw_gid
            except KeyError:
                primary = uid
        else:
            entry = pwd.getpwnam(str(user))
            uid, primary = entry.pw_uid, entry.pw_gid
        if group is None:
            gid = primary
        elif isinstance(group, int) or str(group).isdigit():
            gid = int(group)
        else:
            gid = grp.getgrnam(str(group)).gr_gid
    except KeyError as exc:
        raise SandboxError(f"unknown user or group for the sandbox processes: {exc.args[0]}") from None
    if uid == 0 or gid == 0:
        raise SandboxError("the sandbox user must not be root (uid 0 or gid 0)")
    return uid, gid


def probe_user() -> Probe:
    euid = os.geteuid()
    if euid != 0:
        return Probe(False, f"the broker runs as uid {euid}, not root: children run as uid {euid}")
    return Probe(True, "the broker runs as root")


# --------------------------------------------------------------------------------------- bubblewrap


@dataclass(frozen=True)
class BubblewrapOptions:
    """What the host's bubblewrap supports, found by ``isolation.plan`` (proc/dev mounts can fail in
    containers)."""

    path: str
    version: str
    proc: bool = True
    dev: bool = True
    disable_userns: bool = True


class BubblewrapLayer:
    """Wrap the interpreter in ``bwrap``: every namespace new, a root file system holding only read-only
    ``/usr`` (with the ``/lib``, ``/lib64``, ``/bin`` symlinks of a merged-/usr host) and the shim's
    directory, no writable mount, no capability, a new session, an empty environment.

    bwrap itself runs as the dedicated uid when there is one (``user`` layer), so the sandbox's uid
    maps to that uid on the host, not to root. ``--info-fd`` reports bubblewrap's pid 1; the
    interpreter is its child, found before ``spawn`` returns (rlimits and status need its pid).
    A seccomp program planned by the ``seccomp`` layer is passed as ``--seccomp FD``.
    """

    name = "bubblewrap"

    def __init__(self, options: BubblewrapOptions, shim_dir: str, interpreter: str,
                 uid: int = 65534, gid: int = 65534) -> None:
        self.options = options
        self.uid, self.gid = uid, gid
        self._shim_dir = shim_dir
        self._interpreter = interpreter

    def arguments(self) -> list[str]:
        """bwrap's options (without the descriptors, which are per spawn)."""
        args = ["--unshare-all", "--unshare-user", "--uid", str(self.uid), "--gid", str(self.gid),
                "--cap-drop", "ALL", "--die-with-parent", "--new-session", "--clearenv",
                "--ro-bind", "/usr", "/usr"]
        for top in ("/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin"):
            if os.path.islink(top):
                args += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                args += ["--ro-bind", top, top]
        interpreter = os.path.realpath(self._interpreter)
        if not interpreter.startswith("/usr/"):
            args += ["--ro-bind", interpreter, interpreter]
        args += ["--ro-bind", self._shim_dir, self._shim_dir]
        if self.options.proc:
            args += ["--proc", "/proc"]
        if self.options.dev:
            args += ["--dev", "/dev"]
        # The root and /dev are tmpfs mounts made by bwrap: read-only too, so nothing is writable.
        args += ["--remount-ro", "/"]
        if self.options.dev:
            args += ["--remount-ro", "/dev"]
        if self.options.disable_userns:
            args += ["--disable-userns"]
        return args + ["--chdir", "/"]

    def apply(self, spec: SpawnSpec) -> SpawnSpec:
        info_read, info_write = os.pipe()
        pass_fds = [info_write]
        argv = [self.options.path, *self.arguments(), "--info-fd", str(info_write)]
        try:
            if spec.pending_seccomp is not None:
                seccomp_fd = seccomp.program_fd(spec.pending_seccomp)
                pass_fds.append(seccomp_fd)
                argv += ["--seccomp", str(seccomp_fd)]
        except BaseException:
            os.close(info_read)
            os.close(info_write)
            raise
        for key, value in spec.env.items():
            argv += ["--setenv", key, value]
        argv += ["--", *spec.argv]

        def locate(pid: int) -> int:
            return _locate_interpreter(info_read, pid)

        return replace(spec, argv=tuple(argv), env={}, pass_fds=spec.pass_fds + tuple(pass_fds),
                       parent_fds=spec.parent_fds + (info_read,), locate=locate, wrapper="bubblewrap",
                       pending_seccomp=None)

    def describe(self) -> str:
        mounts = ", ".join(m for m, on in (("/proc", self.options.proc), ("/dev", self.options.dev)) if on)
        return (f"bubblewrap {self.options.version} (all namespaces, uid {self.uid} inside, no capabilities, "
                f"read-only /usr and shim{', ' + mounts if mounts else ''}, no writable mount)")


def _locate_interpreter(info_fd: int, bwrap_pid: int) -> int:
    """The pid of the interpreter: bubblewrap's pid 1 (from ``--info-fd``) forks it."""
    deadline = time.monotonic() + LOCATE_TIMEOUT_S
    data = b""
    poller = select.poll()
    poller.register(info_fd, select.POLLIN | select.POLLHUP)
    while True:  # bubblewrap writes the JSON in pieces, then closes: read to EOF
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SandboxError("bubblewrap did not report its sandbox within "
                               f"{LOCATE_TIMEOUT_S:g} s")
        if not poller.poll(int(remaining * 1000) + 1):
            continue
        chunk = os.read(info_fd, 4096)
        if not chunk:
            break
        data += chunk
    try:
        init_pid = int(json.loads(data)["child-pid"])
    except (ValueError, KeyError, TypeError):
        raise SandboxError("bubblewrap exited before it set up the sandbox") from None
    while True:
        children = child_pids(init_pid)
        if children:
            return children[0]
        if not os.path.exists(f"/proc/{init_pid}"):
            raise SandboxError("bubblewrap's pid 1 exited before it started the interpreter")
        if time.monotonic() > deadline:
            raise SandboxError(f"bubblewrap did not start the interpreter within {LOCATE_TIMEOUT_S:g} s")
        time.sleep(0.0005)


def child_pids(pid: int) -> list[int]:
    """The children of ``pid`` (none when it is gone)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        if os.path.exists(f"/proc/{pid}"):
            return _children_by_scan(pid)  # a kernel without CONFIG_PROC_CHILDREN
        return []
    except OSError:
        return []


def _children_by_scan(parent: int) -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and parent_pid(int(entry)) == parent]


def find_bwrap() -> str | None:
    return shutil.which("bwrap") or (("/usr/bin/bwrap") if os.access("/usr/bin/bwrap", os.X_OK) else None)


def probe_bubblewrap() -> tuple[Probe, BubblewrapOptions | None]:
    """Is bwrap installed, which version, does it support ``--disable-userns``? (Whether it can create
    its namespaces here is found by a trial run in ``isolation.plan``.)"""
    path = find_bwrap()
    if path is None:
        return Probe(False, "bwrap is not installed (Debian: apt-get install bubblewrap)"), None
    try:
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=5).stdout.split()
        usage = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return Probe(False, f"{path} does not run: {exc}"), None
    options = BubblewrapOptions(path=path, version=version[-1] if version else "?",
                                disable_userns="--disable-userns" in usage)
    if os.stat(path).st_mode & 0o4000:
        return Probe(False, f"{path} is setuid root; only the unprivileged (user namespace) bwrap is supported"), None
    return Probe(True, f"bwrap {options.version} at {path}"), options


# ------------------------------------------------------------------------------------------ seccomp


class SeccompLayer:
    """The deny-list of ``sandbox/seccomp.py``: handed to bubblewrap when it wraps the child (it
    installs the filter just before its exec), else installed by a pre-exec step."""

    name = "seccomp"

    def __init__(self, program: bytes, via_bubblewrap: bool, trusted: bool = False) -> None:
        self.program = program
        self.via_bubblewrap = via_bubblewrap
        self.trusted = trusted
        self._install = None if via_bubblewrap else seccomp.installer(program)

    def apply(self, spec: SpawnSpec) -> SpawnSpec:
        if self.via_bubblewrap:
            return replace(spec, pending_seccomp=self.program)
        assert self._install is not None
        return replace(spec, preexec=spec.preexec + (self._install,))

    def describe(self) -> str:
        profile = "trusted profile" if self.trusted else "untrusted profile"
        how = "installed by bubblewrap" if self.via_bubblewrap else "installed before exec"
        return f"seccomp (deny-list, {profile}, {len(seccomp.denied_names(self.trusted))} calls, {how})"


def probe_seccomp(trusted: bool) -> tuple[Probe, bytes | None]:
    try:
        program = seccomp.program(trusted)
    except seccomp.SeccompUnavailable as exc:
        return Probe(False, str(exc)), None
    if not os.path.exists("/proc/self/status") or "Seccomp:" not in _read("/proc/self/status"):
        return Probe(False, "the kernel has no seccomp filter support"), None
    return Probe(True, f"libseccomp program of {len(program) // 8} instructions"), program


# ----------------------------------------------------------------------------------------- landlock


class LandlockLayer:
    """Enforce a Landlock ruleset (``sandbox/landlock.py``) in a pre-exec step."""

    name = "landlock"

    def __init__(self, ruleset_fd: int, abi: int) -> None:
        self.ruleset_fd = ruleset_fd
        self.abi = abi
        self._enforce = landlock.enforcer(ruleset_fd)

    def apply(self, spec: SpawnSpec) -> SpawnSpec:
        return replace(spec, preexec=spec.preexec + (self._enforce,))

    def describe(self) -> str:
        extra = ", no TCP" if self.abi >= 4 else ""
        extra += ", no signals or abstract sockets out" if self.abi >= 6 else ""
        return f"landlock (ABI {self.abi}: read-only /usr and shim, nothing else{extra})"


#: Ruleset descriptors, one per set of paths, kept open for the broker's lifetime (close-on-exec).
_RULESETS: dict[tuple[str, ...], tuple[int, int]] = {}


def probe_landlock(shim_dir: str, interpreter: str) -> tuple[Probe, LandlockLayer | None]:
    paths = [("/usr", landlock.READ_FILE | landlock.READ_DIR | landlock.EXECUTE),
             (shim_dir, landlock.READ_FILE | landlock.READ_DIR)]
    real = os.path.realpath(interpreter)
    if not real.startswith("/usr/"):
        paths.append((real, landlock.READ_FILE | landlock.EXECUTE))
    key = tuple(p for p, _ in paths)
    try:
        if key not in _RULESETS:
            _RULESETS[key] = landlock.create_ruleset(paths)
    except (landlock.LandlockUnavailable, OSError) as exc:
        return Probe(False, str(exc)), None
    fd, abi = _RULESETS[key]
    return Probe(True, f"Landlock ABI {abi}"), LandlockLayer(fd, abi)


# ------------------------------------------------------------------------------------------ unshare

_CLONE_NEWUSER, _CLONE_NEWNET, _CLONE_NEWIPC, _CLONE_NEWUTS = 0x10000000, 0x40000000, 0x08000000, 0x04000000


class UnshareLayer:
    """New user, network, IPC and UTS namespaces, entered in a pre-exec step (one ``unshare`` call).

    The network namespace is empty (no interface up), so even an exploited interpreter has no network.
    The user namespace has no uid mapping: the child holds no capability after its exec.
    """

    name = "unshare"
    flags = _CLONE_NEWUSER | _CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWUTS

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        unshare, flags = libc.unshare, ctypes.c_int(self.flags)
        unshare.argtypes = [ctypes.c_int]

        def enter_namespaces() -> None:
            if unshare(flags) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER|CLONE_NEWNET|CLONE_NEWIPC|CLONE_NEWUTS)")

        self._enter = enter_namespaces

    def apply(self, spec: SpawnSpec) -> SpawnSpec:
        return replace(spec, preexec=spec.preexec + (self._enter,))

    def describe(self) -> str:
        return "unshare (new user, network, IPC and UTS namespaces)"


def probe_unshare() -> Probe:
    limit = _read("/proc/sys/user/max_user_namespaces").strip()
    if limit == "0":
        return Probe(False, "user namespaces are disabled (/proc/sys/user/max_user_namespaces is 0)")
    return Probe(True, "user namespaces enabled")


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


#: The order layers are applied in (pre-exec steps run in this order; seccomp last before exec,
#: and before bubblewrap, which consumes the program it plans).
ORDER = ("rlimits", "user", "unshare", "landlock", "seccomp", "bubblewrap")


_L = TypeVar("_L", bound=Layer)


def ordered(layers: Sequence[_L]) -> list[_L]:
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(layers, key=lambda layer: rank.get(layer.name, len(ORDER)))
