"""Landlock: an unprivileged file system (and, from ABI 4, TCP) allow-list for the child.

The fallback for hosts where bubblewrap cannot create namespaces (a Docker container with the default
profile, for instance): Landlock needs no privilege. The ruleset is built once in the parent with three
system calls through ctypes (no PyPI package: the only one, ``landlock``, is a pre-release); the child's
pre-exec step enforces it with ``prctl(PR_SET_NO_NEW_PRIVS)`` and ``landlock_restrict_self`` on the
inherited ruleset descriptor: two system calls, nothing allocated.

What the child may do, for an untrusted script: read and execute below ``/usr`` (the interpreter and
its libraries), read the shim's directory. Nothing else on the file system: no read, no write, no
directory listing. From ABI 4 no TCP bind or connect; from ABI 6 no abstract unix sockets and no
signals to processes outside the sandbox.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable, Sequence

_SYS_CREATE_RULESET = 444  # the same number on every architecture (added after the unified table)
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# File system rights, by the ABI that introduced them.
EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
_FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | (1 << 14) | (1 << 15)  # + TRUNCATE, IOCTL_DEV
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1


class LandlockUnavailable(Exception):
    """Landlock cannot be used here; the message says why."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    libc.prctl.restype = ctypes.c_int
    return libc


def abi_version() -> int:
    """The kernel's Landlock ABI (1, 2, ...). Raises ``LandlockUnavailable`` with the reason."""
    libc = _libc()
    version = libc.syscall(ctypes.c_long(_SYS_CREATE_RULESET), None, ctypes.c_size_t(0),
                           ctypes.c_uint32(_CREATE_RULESET_VERSION))
    if version < 0:
        err = ctypes.get_errno()
        raise LandlockUnavailable(f"the kernel has no Landlock ({os.strerror(err)}); it needs Linux 5.13+ "
                                  "with 'landlock' in the lsm= boot parameter")
    return int(version)


def create_ruleset(read_paths: Sequence[tuple[str, int]]) -> tuple[int, int]:
    """A ruleset descriptor (close-on-exec) allowing only ``read_paths`` (path, rights), and the ABI.

    The caller keeps the descriptor open for as long as children are started with it.
    """
    abi = abi_version()
    libc = _libc()
    fs_rights = _FS_RIGHTS_BY_ABI.get(abi, _FS_RIGHTS_BY_ABI[5])
    attr = _RulesetAttr(fs_rights, _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0,
                        _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    fd = libc.syscall(ctypes.c_long(_SYS_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size),
                      ctypes.c_uint32(0))
    if fd < 0:
        raise LandlockUnavailable(f"landlock_create_ruleset failed: {os.strerror(ctypes.get_errno())}")
    try:
        for path, rights in read_paths:
            path_fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                allowed = rights & fs_rights
                if not os.path.isdir(path):
                    allowed &= _FILE_RIGHTS
                rule = _PathBeneathAttr(allowed, path_fd)
                if libc.syscall(ctypes.c_long(_SYS_ADD_RULE), ctypes.c_int(fd), ctypes.c_int(_RULE_PATH_BENEATH),
                                ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
                    raise LandlockUnavailable(f"landlock_add_rule({path}) failed: "
                                              f"{os.strerror(ctypes.get_errno())}")
            finally:
                os.close(path_fd)
    except BaseException:
        os.close(fd)
        raise
    return int(fd), abi


def enforcer(ruleset_fd: int) -> Callable[[], None]:
    """A pre-exec step enforcing the ruleset on the calling (child) process: two system calls."""
    libc = _libc()
    prctl, syscall = libc.prctl, libc.syscall
    number, fd, flags = ctypes.c_long(_SYS_RESTRICT_SELF), ctypes.c_int(ruleset_fd), ctypes.c_uint32(0)

    def enforce_landlock() -> None:
        if prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if syscall(number, fd, flags) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")

    return enforce_landlock
