"""Landlock, no-new-privs and resource limits through ctypes: the kernel calls, nothing else.

Standard library only: this module runs in the sandbox's exec wrapper (`python -I -S`) before
anything from site-packages can be imported. Landlock (Linux 5.13+, unprivileged) restricts the
calling thread and everything it later starts, across execve; a domain can only be narrowed.

What each ABI version adds (Documentation/userspace-api/landlock.rst):
1 filesystem (execute, read, write, make, remove); 2 REFER (rename/link across directories);
3 TRUNCATE; 4 TCP bind and connect by port; 5 IOCTL_DEV; 6 scoping of abstract unix sockets
and signals to the domain; 7 audit-log flags (nothing agentd needs).
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import struct

__all__ = [
    "FS_ALL_BY_ABI",
    "FS_READ",
    "FS_READ_FILE_ONLY",
    "FS_WRITE",
    "FS_WRITE_FILE_ONLY",
    "NET_BIND_TCP",
    "NET_CONNECT_TCP",
    "SCOPE_ABSTRACT_UNIX_SOCKET",
    "SCOPE_SIGNAL",
    "LandlockError",
    "kernel_abi",
    "no_new_privs",
    "restrict_self",
    "set_limits",
]

# syscall numbers (the same on x86-64 and arm64: both use the generic table for new calls)
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_RULE_NET_PORT = 2
_PR_SET_NO_NEW_PRIVS = 38

# filesystem rights
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5

_FS_V1 = (1 << 13) - 1
FS_ALL_BY_ABI = {
    1: _FS_V1,
    2: _FS_V1 | FS_REFER,
    3: _FS_V1 | FS_REFER | FS_TRUNCATE,
    4: _FS_V1 | FS_REFER | FS_TRUNCATE,
    5: _FS_V1 | FS_REFER | FS_TRUNCATE | FS_IOCTL_DEV,
}
"""Every filesystem right an ABI version handles (6 and later: as 5)."""

FS_READ = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
FS_READ_FILE_ONLY = FS_EXECUTE | FS_READ_FILE
FS_WRITE = (
    FS_READ
    | FS_WRITE_FILE
    | FS_REMOVE_DIR
    | FS_REMOVE_FILE
    | FS_MAKE_DIR
    | FS_MAKE_REG
    | FS_MAKE_SOCK
    | FS_MAKE_FIFO
    | FS_MAKE_SYM
    | FS_REFER
    | FS_TRUNCATE
)
FS_WRITE_FILE_ONLY = FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE
_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV

# network rights (ABI 4) and scopes (ABI 6)
NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1


class LandlockError(OSError):
    """A Landlock call failed; the message names the call and the path or port."""


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _syscall(number: int, *args: object) -> int:
    result = int(_libc().syscall(ctypes.c_long(number), *args))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def kernel_abi() -> int:
    """The Landlock ABI this kernel offers: 0 when it has none (too old, disabled at boot,
    not Linux, or an architecture whose syscall numbers this module does not know)."""
    system = os.uname()  # not `platform`: its import is most of the exec wrapper's start
    if system.sysname != "Linux" or system.machine not in {"x86_64", "aarch64"}:
        return 0
    try:
        return _syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    except OSError:  # ENOSYS: not built in; EOPNOTSUPP: disabled at boot
        return 0


def no_new_privs() -> None:
    """PR_SET_NO_NEW_PRIVS: no setuid, setgid or file capability takes effect after execve
    (required by Landlock for an unprivileged process)."""
    libc = _libc()
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(code)}")


def set_limits(limits: dict[str, int]) -> None:
    """setrlimit for each of RLIMIT_<NAME> (soft = hard = value; 0 or absent: unchanged).
    A limit above the current hard limit is lowered to it (an unprivileged process cannot
    raise it)."""
    for name, value in limits.items():
        if value <= 0:
            continue
        which = getattr(resource, f"RLIMIT_{name}")
        _, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))


def restrict_self(
    abi: int,
    *,
    fs_rules: list[tuple[str, int]],
    connect_ports: list[int],
    scope: bool,
) -> None:
    """Enter a new Landlock domain: every filesystem right of `abi` is denied except
    `fs_rules` (path, rights: beneath a directory, or on a file); with ABI >= 4 TCP bind is
    denied and TCP connect allowed only to `connect_ports`; with ABI >= 6 and `scope`, signals
    and abstract unix sockets reach only this domain. Raises LandlockError on any failure (the
    caller must then not run the sandboxed program as if it were sandboxed)."""
    if abi < 1:
        raise LandlockError(errno.ENOSYS, "Landlock is not available on this kernel")
    handled_fs = FS_ALL_BY_ABI[min(abi, 5)]
    handled_net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 and scope else 0
    attr = struct.pack("=QQQ", handled_fs, handled_net, scoped)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    buf = ctypes.create_string_buffer(attr[:size], size)
    try:
        ruleset = _syscall(_SYS_CREATE_RULESET, buf, ctypes.c_size_t(size), ctypes.c_uint32(0))
    except OSError as exc:
        raise LandlockError(exc.errno, f"landlock_create_ruleset: {exc.strerror}") from None
    try:
        for path, rights in fs_rules:
            _add_path_rule(ruleset, path, rights & handled_fs)
        if handled_net:
            for port in sorted(set(connect_ports)):
                rule = ctypes.create_string_buffer(struct.pack("=QQ", NET_CONNECT_TCP, port), 16)
                try:
                    _syscall(_SYS_ADD_RULE, ruleset, _RULE_NET_PORT, rule, ctypes.c_uint32(0))
                except OSError as exc:
                    raise LandlockError(
                        exc.errno, f"landlock_add_rule (TCP connect to port {port}): {exc.strerror}"
                    ) from None
        no_new_privs()
        try:
            _syscall(_SYS_RESTRICT_SELF, ruleset, ctypes.c_uint32(0))
        except OSError as exc:
            raise LandlockError(exc.errno, f"landlock_restrict_self: {exc.strerror}") from None
    finally:
        os.close(ruleset)


def _add_path_rule(ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        raise LandlockError(exc.errno, f"{path}: {exc.strerror} (a sandbox rule)") from None
    try:
        import stat

        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= _FILE_RIGHTS  # a file takes file rights only (else EINVAL)
        rule = ctypes.create_string_buffer(struct.pack("=Qi", rights, fd), 12)
        try:
            _syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, rule, ctypes.c_uint32(0))
        except OSError as exc:
            raise LandlockError(exc.errno, f"landlock_add_rule ({path}): {exc.strerror}") from None
    finally:
        os.close(fd)
