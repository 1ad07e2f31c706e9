"""A replica under a uid of its own: what makes its files reachable, and the switch itself.

When the daemon may change users (root, or CAP_SETUID + CAP_SETGID), each agent's replicas run
under a uid of their own: another agent's processes (and the children a graph starts, which are
dumpable again after their exec) are then another user's, out of reach of `/proc/<pid>/environ`,
`ptrace` and signals whatever Landlock offers.

A uid of its own can no longer pass through directories only the daemon's user may enter: a
state directory (mode 0700) holds the replica's scratch folder, a Python installed under
`/root` holds the interpreter. So, before it switches, the exec wrapper (still root) gives the
replica a private mount namespace in which every path it is granted is reachable: each directory
on the way that the uid could not pass through is covered by an empty tmpfs (mode 0755, nothing
else in it), and the granted path is bind-mounted back at its place. The host's files and modes
do not change; what the tmpfs hides (the rest of `/root`, the rest of the state directory) is
not there at all for the replica. Landlock rules attach to inodes, so they apply to the
bind-mounted paths as to the originals.

Standard library only (ctypes): the exec wrapper imports nothing else.
"""

from __future__ import annotations

import ctypes
import os
import stat
from collections.abc import Sequence

__all__ = ["can_switch_users", "can_mount", "reveal", "switch_user", "unreachable"]

_CAP_SETGID = 6
_CAP_SETUID = 7
_CAP_SYS_ADMIN = 21
_CLONE_NEWNS = 0x00020000
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_O_PATH = 0o10000000


def _effective() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def can_switch_users() -> bool:
    """May this process start others under another uid (CAP_SETUID and CAP_SETGID)?"""
    caps = _effective()
    return bool(caps & (1 << _CAP_SETUID)) and bool(caps & (1 << _CAP_SETGID))


def can_mount() -> bool:
    """May it give a child a private mount namespace (CAP_SYS_ADMIN)?"""
    return bool(_effective() & (1 << _CAP_SYS_ADMIN))


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _passable(st: os.stat_result, uid: int, gid: int) -> bool:
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _first_blocked(path: str, uid: int, gid: int) -> str | None:
    """The directory nearest the root, on the way to `path`, that `uid` cannot pass."""
    parts = path.strip("/").split("/")
    for ancestor in ["/", *("/" + "/".join(parts[:i]) for i in range(1, len(parts)))]:
        try:
            if not _passable(os.stat(ancestor), uid, gid):
                return ancestor
        except OSError:
            return None  # nothing to reveal on a path that does not exist
    return None


def unreachable(paths: list[str], uid: int, gid: int) -> list[str]:
    """The paths `uid` could not reach as things are (a directory on the way it cannot pass)."""
    return [p for p in paths if _first_blocked(p, uid, gid) is not None]


def reveal(paths: list[str], uid: int, gid: int, aliases: Sequence[str] = ()) -> int:
    """Enter a private mount namespace in which `uid` reaches every path of `paths` (absolute,
    resolved) and every one of `aliases` (the unresolved names the replica is given, through
    symbolic links that a cover would hide); return how many were bind-mounted. Needs
    CAP_SYS_ADMIN; changes nothing on the host."""
    wanted = sorted(set(unreachable(paths, uid, gid)), key=lambda p: (p.count("/"), p))
    if not wanted:
        return 0
    links: list[tuple[str, str]] = []
    for alias in aliases:
        found = _first_link(alias)
        if found is not None:
            links.append(found)
    covered: list[str] = []
    libc = _libc()
    _check(libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    # nothing mounted from here on propagates back to the host
    _check(libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "mount --make-rprivate /")
    # handles on the originals in the new namespace (a bind's source must be one of its own
    # mounts), taken before anything is covered
    handles = {}
    for path in wanted:
        try:
            handles[path] = os.open(path, _O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
    old_umask = os.umask(0o022)
    try:
        for path, fd in handles.items():
            blocked = _first_blocked(path, uid, gid)
            if blocked is None:  # a tmpfs made for an earlier path opened the way already
                pass
            else:
                flags = _MS_NOSUID | _MS_NODEV
                _check(
                    libc.mount(b"agentd-sandbox", blocked.encode(), b"tmpfs", flags, b"mode=0755"),
                    f"mount tmpfs on {blocked}",
                )
                covered.append(blocked)
            _make_mount_point(path, fd)
            source = f"/proc/self/fd/{fd}".encode()
            _check(
                libc.mount(source, path.encode(), None, _MS_BIND | _MS_REC, None),
                f"bind {path}",
            )
        for link, target in links:  # a link the covers hid: again, inside a cover only
            inside = any(link.startswith(c.rstrip("/") + "/") for c in covered)
            if inside and not os.path.lexists(link):
                os.makedirs(os.path.dirname(link), mode=0o755, exist_ok=True)
                os.symlink(target, link)
    finally:
        os.umask(old_umask)
        for fd in handles.values():
            os.close(fd)
    return len(handles)


def _first_link(path: str) -> tuple[str, str] | None:
    """The first symbolic link on `path` (itself included) and where it points."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/" + "/".join(parts[:i])
        if os.path.islink(prefix):
            return prefix, os.readlink(prefix)
    return None


def _make_mount_point(path: str, fd: int) -> None:
    """Create `path` (and the folders above it) in the tmpfs where it is missing: a folder
    for a folder, an empty file for a file."""
    parent = os.path.dirname(path)
    os.makedirs(parent, mode=0o755, exist_ok=True)
    if os.path.lexists(path):
        return
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        os.mkdir(path, 0o755)
    else:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def switch_user(uid: int, gid: int) -> None:
    """Become `uid`:`gid` with no supplementary groups; every capability goes with uid 0."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
