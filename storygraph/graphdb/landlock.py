"""Linux Landlock through ``ctypes``: take away this process's access to files and the network.

Used by the console sandbox (``console.py``) just before it opens the database: the rules allow reading the
files named and nothing else — no other file opened, created, written, removed or executed, no TCP bind or
connect, no abstract unix sockets or signals outside the process. The restriction is inherited by every
thread and child created afterwards and cannot be undone. ``available()`` says whether the kernel has it.
"""

from __future__ import annotations

import ctypes
import os
import platform
from typing import Iterable

_SYSCALLS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}  # create_ruleset, add_rule, restrict_self
_PR_SET_NO_NEW_PRIVS = 38
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

_FS_EXECUTE = 1 << 0
_FS_WRITE_FILE = 1 << 1
_FS_READ_FILE = 1 << 2
_FS_ALL_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
_NET_BIND_TCP = 1 << 0
_NET_CONNECT_TCP = 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
_SCOPE_SIGNAL = 1 << 1


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The kernel's Landlock ABI version, 0 when it has none (or this is not Linux on x86_64/aarch64)."""
    calls = _SYSCALLS.get(platform.machine())
    if calls is None or platform.system() != "Linux":
        return 0
    r = _libc().syscall(calls[0], None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(0, int(r))


def available() -> bool:
    return abi_version() > 0


def restrict_to_reading(paths: Iterable[str]) -> int:
    """Allow reading ``paths`` (regular files) and nothing else on the filesystem or the network, from now on.

    Returns the ABI version used; raises OSError when the kernel refuses.
    """
    abi = abi_version()
    if abi == 0:
        raise OSError("Landlock is not available on this kernel")
    create, add_rule, restrict = _SYSCALLS[platform.machine()]
    libc = _libc()
    attr = _RulesetAttr(handled_access_fs=_FS_ALL_BY_ABI.get(abi, (1 << 16) - 1),
                        handled_access_net=(_NET_BIND_TCP | _NET_CONNECT_TCP) if abi >= 4 else 0,
                        scoped=(_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL) if abi >= 6 else 0)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else (16 if abi >= 4 else 8)
    fd = libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"landlock_create_ruleset: {os.strerror(err)}")
    try:
        for path in paths:
            pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = _PathBeneathAttr(allowed_access=_FS_READ_FILE, parent_fd=pfd)
                if libc.syscall(add_rule, ctypes.c_int(fd), ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(rule),
                                ctypes.c_uint32(0)) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"landlock_add_rule({path}): {os.strerror(err)}")
            finally:
                os.close(pfd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(NO_NEW_PRIVS): {os.strerror(err)}")
        if libc.syscall(restrict, ctypes.c_int(fd), ctypes.c_uint32(0)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"landlock_restrict_self: {os.strerror(err)}")
    finally:
        os.close(fd)
    return abi
