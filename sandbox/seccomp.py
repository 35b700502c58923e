"""The seccomp deny-list: system calls a Lua interpreter never makes, refused with EPERM.

The filter allows everything else (a deny-list, not an allow-list: stock ``lua5.4`` and glibc change
which calls they make between releases, and an allow-list that misses one kills the interpreter in
the middle of a call). It matters only after an interpreter exploit, since the Lua sandbox already
removes every function that reaches these calls; then it takes away the kernel's riskiest surfaces
(namespaces, mounts, BPF, keyrings, io_uring, ptrace) and, for untrusted scripts, processes and
network.

The program is compiled by libseccomp (through ``pyseccomp``, a ctypes binding on PyPI; Debian's
``python3-seccomp`` only serves /usr/bin/python3) once per broker process and exported as BPF bytes.
It is installed either by bubblewrap (``--seccomp FD``, just before it execs the interpreter) or,
without bubblewrap, by the child's pre-exec step with two raw ``prctl`` calls on a buffer prepared in
the parent: no library code runs between fork and exec.

``execve`` stays allowed: the filter is installed before the exec of the interpreter itself. A
process that cannot fork (untrusted profile) can still replace itself with another program; it keeps
every other restriction (no new privileges, the filter, the namespaces, the rlimits).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import tempfile
from collections.abc import Callable

#: Denied for every sandbox process, with the reason (docs/security.md mirrors this table).
DENIED: dict[str, str] = {
    "ptrace": "inspect and control other processes",
    "process_vm_readv": "read another process's memory",
    "process_vm_writev": "write another process's memory",
    "kcmp": "compare kernel objects of other processes",
    "pidfd_getfd": "steal a descriptor from another process",
    "mount": "change the file system view",
    "umount2": "change the file system view",
    "pivot_root": "change the root directory",
    "chroot": "change the root directory",
    "move_mount": "new mount API",
    "open_tree": "new mount API",
    "fsopen": "new mount API",
    "fsconfig": "new mount API",
    "fsmount": "new mount API",
    "fspick": "new mount API",
    "mount_setattr": "new mount API",
    "unshare": "new namespaces (a large kernel attack surface, user namespaces above all)",
    "setns": "enter other namespaces",
    "keyctl": "kernel keyrings",
    "add_key": "kernel keyrings",
    "request_key": "kernel keyrings",
    "bpf": "load BPF programs",
    "perf_event_open": "performance counters (a frequent source of kernel bugs)",
    "userfaultfd": "a classic tool for exploiting kernel races",
    "io_uring_setup": "io_uring (bypasses seccomp for the operations it queues)",
    "io_uring_enter": "io_uring",
    "io_uring_register": "io_uring",
    "kexec_load": "load a new kernel",
    "kexec_file_load": "load a new kernel",
    "init_module": "load kernel modules",
    "finit_module": "load kernel modules",
    "delete_module": "unload kernel modules",
    "name_to_handle_at": "open files by handle, around path checks",
    "open_by_handle_at": "open files by handle, around path checks (a container escape)",
    "personality": "change the execution domain (e.g. turn ASLR off)",
    "reboot": "reboot",
    "swapon": "swap",
    "swapoff": "swap",
    "syslog": "kernel log",
    "acct": "process accounting",
    "settimeofday": "system clock",
    "clock_settime": "system clock",
    "clock_adjtime": "system clock",
    "adjtimex": "system clock",
    "iopl": "I/O ports",
    "ioperm": "I/O ports",
    "quotactl": "disk quotas",
    "vhangup": "terminals",
}

#: Denied for untrusted scripts only: the shim needs neither processes nor network. Trusted scripts
#: (``io.popen``, ``os.execute``) keep these, but not ``clone`` with namespace flags.
DENIED_UNTRUSTED: dict[str, str] = {
    "socket": "scripts have no network",
    "socketpair": "scripts have no network",
    "connect": "scripts have no network",
    "bind": "scripts have no network",
    "listen": "scripts have no network",
    "accept": "scripts have no network",
    "accept4": "scripts have no network",
    "fork": "scripts start no processes",
    "vfork": "scripts start no processes",
    "clone": "scripts start no processes or threads",
}

#: ``clone`` flags that create namespaces: refused for trusted scripts too.
NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
    "CLONE_NEWTIME": 0x00000080,
}

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2


class SeccompUnavailable(Exception):
    """The filter cannot be built here; the message says why."""


def denied_names(trusted: bool) -> list[str]:
    """The calls refused outright (``clone3`` gets ENOSYS, so glibc falls back to ``clone``)."""
    names = list(DENIED)
    if not trusted:
        names += list(DENIED_UNTRUSTED)
    return names


@functools.cache
def program(trusted: bool) -> bytes:
    """The BPF program (``struct sock_filter`` array) of the deny-list. Raises ``SeccompUnavailable``."""
    try:
        import pyseccomp
    except Exception as exc:  # ImportError, or RuntimeError when libseccomp.so.2 is missing
        raise SeccompUnavailable(f"pyseccomp/libseccomp cannot be loaded: {exc}") from None
    try:
        syscall_filter = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
        deny = pyseccomp.ERRNO(errno.EPERM)
        for name in denied_names(trusted):
            number = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
            if number == -1:  # __NR_SCMP_ERROR: unknown to this libseccomp
                continue
            syscall_filter.add_rule(deny, number)
        clone3 = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, "clone3")
        if clone3 != -1:
            # Its flags are in memory, out of seccomp's reach; glibc falls back to clone on ENOSYS.
            syscall_filter.add_rule(pyseccomp.ERRNO(errno.ENOSYS), clone3)
        if trusted:
            for flag in NAMESPACE_FLAGS.values():
                syscall_filter.add_rule(deny, "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, flag, flag))
        with tempfile.TemporaryFile() as out:
            syscall_filter.export_bpf(out)
            out.seek(0)
            data = out.read()
    except OSError as exc:
        raise SeccompUnavailable(f"libseccomp could not build the filter: {exc}") from None
    if not data or len(data) % 8:
        raise SeccompUnavailable(f"libseccomp exported {len(data)} bytes, not a BPF program")
    return data


def program_fd(data: bytes) -> int:
    """A memory file holding ``data`` at offset 0, for ``bwrap --seccomp FD`` (the caller closes it)."""
    fd = os.memfd_create("luabroker-seccomp", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    libc.prctl.restype = ctypes.c_int
    return libc


def installer(data: bytes) -> Callable[[], None]:
    """A pre-exec step that installs ``data`` in the calling (child) process.

    Everything is prepared here, in the parent; the step itself makes two ``prctl`` system calls
    through ctypes and allocates nothing, which is what makes it acceptable between fork and exec in a
    threaded broker. It raises (so Popen fails and the child never runs) if either call fails.
    """
    libc = _libc()
    prctl = libc.prctl
    buffer = ctypes.create_string_buffer(data, len(data))
    fprog = _SockFprog(len(data) // 8, ctypes.addressof(buffer))
    fprog_address = ctypes.addressof(fprog)

    def install_seccomp() -> None:
        if prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, fprog_address, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")

    install_seccomp.keep_alive = (buffer, fprog)  # type: ignore[attr-defined]
    return install_seccomp
