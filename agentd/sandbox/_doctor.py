"""`agentd doctor`: what this host lets agentd protect, checked, not assumed."""

from __future__ import annotations

import os
from pathlib import Path

from agentd.sandbox._landlock import kernel_abi
from agentd.sandbox._users import can_mount, can_switch_users

__all__ = ["host_report"]


def host_report(abi_cap: int | None = None) -> tuple[list[tuple[str, bool, str]], int]:
    """(check, ok, detail) rows and the Landlock ABI replicas would get."""
    abi = kernel_abi()
    if abi_cap is not None:
        abi = min(abi, abi_cap)
    rows: list[tuple[str, bool, str]] = []
    rows.append(("Landlock", abi >= 1, f"ABI {abi}" if abi else "not available"))
    protected = [
        ("filesystem rules (read, write, execute)", abi >= 1),
        ("truncate outside the write rules", abi >= 3),
        ("TCP connect and bind by port", abi >= 4),
        ("ioctl on devices", abi >= 5),
        ("signal and abstract unix socket scoping", abi >= 6),
    ]
    for what, ok in protected:
        rows.append((f"  {what}", ok, "enforced" if ok else "NOT protected"))
    rows.append(("no-new-privs and resource limits", True, "always"))
    userns = _read("/proc/sys/user/max_user_namespaces")
    rows.append(
        (
            "user namespaces",
            userns not in (None, "0"),
            f"max_user_namespaces = {userns}" if userns is not None else "not available",
        )
    )
    rows.append(_cgroup_delegation())
    uid = os.geteuid()
    own = can_switch_users() and can_mount()
    rows.append(
        (
            "a uid per agent",
            own,
            "possible: with [sandbox].users = auto each agent's replicas get their own uid"
            if own
            else f"not possible: replicas run as this user (uid {uid}); run the daemon as root",
        )
    )
    rows.append(("UDP and hosts", False, "not filtered (Landlock rules are TCP ports only)"))
    return rows, abi


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _cgroup_delegation() -> tuple[str, bool, str]:
    controllers = _read("/sys/fs/cgroup/cgroup.controllers")
    if controllers is None:
        return ("cgroup v2 delegation", False, "no cgroup v2 at /sys/fs/cgroup")
    own = _read("/proc/self/cgroup") or ""
    path = own.split("::", 1)[-1].strip() if "::" in own else "/"
    folder = Path("/sys/fs/cgroup") / path.lstrip("/")
    writable = os.access(folder, os.W_OK)
    subtree = _read(str(folder / "cgroup.subtree_control")) or ""
    detail = (
        f"cgroup {path}: {'writable' if writable else 'not writable'}, controllers "
        f"[{controllers}], delegated [{subtree}] (agentd does not use cgroups yet)"
    )
    return ("cgroup v2 delegation", writable, detail)
