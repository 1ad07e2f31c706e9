"""POSIX ACL entries that let an agent's own uid use the paths its spec declares.

A replica under a uid of its own (agentd/sandbox/_users.py) still needs what its agent.toml
`[sandbox]` declares: a folder it writes (`write`), files it reads (`read`). Those belong to
the daemon's user, often mode 0755 or 0644. Changing their owner would take them from whoever
else uses them (another agent declaring the same folder, the operator); a named-user ACL entry
(`user:<uid>:rwx`) adds the agent without taking anything away, the way `setfacl -m` does. A
folder also gets the entry as its default ACL, so what is created in it later stays usable.

Standard library only: the xattr `system.posix_acl_access` / `system.posix_acl_default` in
its binary form (version 2; entries of tag, permissions, id, sorted by tag then id).
"""

from __future__ import annotations

import errno
import os
import stat
import struct

__all__ = ["grant_uid"]

_ACCESS = "system.posix_acl_access"
_DEFAULT = "system.posix_acl_default"
_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_UNDEFINED = 0xFFFFFFFF
_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")
# what one grant walks below a folder: more is a misconfiguration, not a scratch folder
MAX_ENTRIES = 20_000


def _from_mode(mode: int) -> dict[tuple[int, int], int]:
    return {
        (_USER_OBJ, _UNDEFINED): (mode >> 6) & 7,
        (_GROUP_OBJ, _UNDEFINED): (mode >> 3) & 7,
        (_OTHER, _UNDEFINED): mode & 7,
    }


def _read(path: str, name: str, mode: int) -> dict[tuple[int, int], int]:
    try:
        raw = os.getxattr(path, name, follow_symlinks=False)
    except OSError as exc:
        if exc.errno != errno.ENODATA:
            raise
        return _from_mode(mode)
    entries = {}
    for offset in range(_HEADER.size, len(raw), _ENTRY.size):
        tag, perm, ident = _ENTRY.unpack_from(raw, offset)
        entries[(tag, ident)] = perm
    return entries


def _write(path: str, name: str, entries: dict[tuple[int, int], int]) -> None:
    named = [p for (tag, _), p in entries.items() if tag in (_USER, _GROUP)]
    entries = {k: v for k, v in entries.items() if k[0] != _MASK}
    if named:
        group = entries.get((_GROUP_OBJ, _UNDEFINED), 0)
        mask = group
        for perm in named:
            mask |= perm
        entries[(_MASK, _UNDEFINED)] = mask
    body = b"".join(_ENTRY.pack(tag, perm, ident) for (tag, ident), perm in sorted(entries.items()))
    os.setxattr(path, name, _HEADER.pack(_VERSION) + body, follow_symlinks=False)


def _grant_one(path: str, uid: int, *, write: bool) -> None:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or st.st_uid == uid:
        return
    is_dir = stat.S_ISDIR(st.st_mode)
    perm = 4 | (2 if write else 0) | (1 if is_dir or st.st_mode & stat.S_IXUSR else 0)
    entries = _read(path, _ACCESS, st.st_mode)
    if entries.get((_USER, uid), 0) & perm != perm:
        entries[(_USER, uid)] = perm
        _write(path, _ACCESS, entries)
    if is_dir:
        want = 7 if write else 5
        default = _read(path, _DEFAULT, st.st_mode)
        if default.get((_USER, uid), 0) & want != want:
            default[(_USER, uid)] = want
            _write(path, _DEFAULT, default)


def grant_uid(path: str, uid: int, *, write: bool) -> int:
    """Give `uid` read (and, with `write`, write) access to `path` and, for a folder, to what
    is in it, by named-user ACL entries; return how many entries were set. Raises OSError when
    the filesystem has no ACLs (EOPNOTSUPP) or the daemon may not set them."""
    if not os.path.exists(path):
        return 0
    count = 1
    _grant_one(path, uid, write=write)
    if not os.path.isdir(path) or os.path.islink(path):
        return count
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            count += 1
            if count > MAX_ENTRIES:
                raise OSError(errno.E2BIG, f"more than {MAX_ENTRIES} entries below {path}")
            _grant_one(os.path.join(root, name), uid, write=write)
    return count
