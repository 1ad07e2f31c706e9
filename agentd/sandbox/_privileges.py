"""Privileges a sandboxed process gives up besides Landlock's: capabilities, and being readable.

A daemon run as root (the systemd unit, CI) would start replicas as root with every capability:
Landlock still confines their files and TCP, but CAP_NET_RAW opens raw sockets (around the TCP
rules) and CAP_SYS_PTRACE reads any process's memory and environment. So the sandbox empties
the capability bounding set before it execs the replica (an exec as root then grants nothing)
and clears the ambient and inheritable sets. And every agentd process marks itself not
dumpable: without CAP_SYS_PTRACE, a process of the same uid can then read neither its
`/proc/<pid>/environ` nor its memory (measured here: without it, a sandboxed replica read
another process's environment).

Standard library only (ctypes): the exec wrapper imports nothing else.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform

__all__ = [
    "capabilities_in_effect",
    "drop_bounding_set",
    "drop_capabilities",
    "set_undumpable",
]

_PR_SET_DUMPABLE = 4
_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_SYS_CAPSET = {"x86_64": 126, "aarch64": 91}
_CAP_LAST = 63  # the kernel refuses (EINVAL) the numbers past its own last capability


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _fail(what: str) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{what}: {os.strerror(code)}")


def set_undumpable() -> None:
    """PR_SET_DUMPABLE 0: no core dumps, and /proc/<pid>/{environ,mem,fd,...} of this process
    belong to root, out of reach of the same uid without CAP_SYS_PTRACE."""
    if _libc().prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise _fail("prctl(PR_SET_DUMPABLE)")


def drop_bounding_set() -> None:
    """Empty the capability bounding set: no exec brings a capability back, even as uid 0.
    Needs CAP_SETPCAP; without it there is nothing to drop (EPERM is not an error)."""
    libc = _libc()
    for cap in range(_CAP_LAST + 1):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            code = ctypes.get_errno()
            if code == errno.EINVAL:  # past the kernel's last capability
                break
            if code != errno.EPERM:  # EPERM: we hold no CAP_SETPCAP, so no capability either
                raise _fail(f"prctl(PR_CAPBSET_DROP, {cap})")


def drop_capabilities() -> None:
    """Empty the bounding set (`drop_bounding_set`), clear the ambient set, and set effective,
    permitted and inheritable to nothing. After execve, even as uid 0, nothing comes back."""
    drop_bounding_set()
    libc = _libc()
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)  # absent before 4.3
    number = _SYS_CAPSET.get(platform.machine())
    if number is None:
        return
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.syscall(number, ctypes.byref(header), data) != 0:
        raise _fail("capset")


def capabilities_in_effect() -> int:
    """This process's effective capabilities (CapEff in /proc/self/status)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0
