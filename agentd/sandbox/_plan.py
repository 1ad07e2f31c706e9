"""A replica's sandbox as data: which paths, ports, scopes and limits, built from the host's
Landlock ABI, with what that ABI cannot protect named.

Standard library only (the exec wrapper reads a plan before anything else is importable). The
daemon builds the plan (`build_plan`), passes it to the wrapper in the environment
(`AGENTD_SANDBOX`) and reports its `digest` in `agentctl ps` and in the replica's records.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agentd.sandbox._landlock import (
    FS_READ,
    FS_READ_DIR,
    FS_READ_FILE_ONLY,
    FS_WRITE,
    FS_WRITE_FILE_ONLY,
)

__all__ = ["ENV_PLAN", "RIGHTS", "SandboxPlan", "build_plan", "missing_protections"]

ENV_PLAN = "AGENTD_SANDBOX"
"""The environment variable that carries the plan to the exec wrapper (removed before exec)."""

RIGHTS = {
    "read": FS_READ,  # read and execute beneath a directory (or a file)
    "read-file": FS_READ_FILE_ONLY,
    "list": FS_READ_DIR,  # names only: a directory above a protected one
    "write": FS_WRITE,  # create, write, remove beneath (no device nodes)
    "rw-file": FS_WRITE_FILE_ONLY,
}

_MISSING = (
    (1, "filesystem rules (Landlock): every file this user can read or write is reachable"),
    (3, "truncate(2) outside the write rules (Landlock ABI 3, TRUNCATE)"),
    (4, "TCP connect and bind rules (Landlock ABI 4): any TCP port is reachable"),
    (5, "ioctl on device files (Landlock ABI 5, IOCTL_DEV)"),
    (
        6,
        "signal and abstract unix socket scoping (Landlock ABI 6): the replica can signal "
        "the daemon and any process of this user",
    ),
)

# children of a directory carved around a protected path: more is a misconfiguration
_MAX_CARVED = 4096


def missing_protections(abi: int) -> list[str]:
    """What a kernel with Landlock ABI `abi` cannot enforce (empty from ABI 6 on)."""
    return [what for needed, what in _MISSING if abi < needed]


@dataclass(frozen=True)
class SandboxPlan:
    """What one replica may do. `fs` holds (path, right) with right a key of RIGHTS."""

    abi: int
    mode: str = "enforce"  # enforce: a replica that cannot enter it does not start; warn: it runs
    fs: tuple[tuple[str, str], ...] = ()
    connect_ports: tuple[int, ...] = ()
    scope: bool = True
    limits: dict[str, int] = field(default_factory=dict)  # RLIMIT_<NAME>: value (0: unchanged)
    uid: int | None = None  # run under this uid and gid (agentd/sandbox/_users.py); None: as is
    gid: int | None = None
    aliases: tuple[str, ...] = ()  # unresolved paths the process is given (agent folder)

    @property
    def missing(self) -> list[str]:
        return missing_protections(self.abi)

    @property
    def digest(self) -> str:
        """A short hash of the rules: equal digests, equal sandboxes."""
        body = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def summary(self) -> dict[str, object]:
        """What `agentctl ps` and the records show."""
        return {
            "mode": self.mode,
            "landlock_abi": self.abi,
            "digest": self.digest,
            "rules": len(self.fs),
            "connect_ports": list(self.connect_ports),
            "missing": self.missing,
            "uid": self.uid,
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SandboxPlan:
        raw = json.loads(text)
        return cls(
            abi=int(raw["abi"]),
            mode=str(raw["mode"]),
            fs=tuple((str(p), str(r)) for p, r in raw["fs"]),
            connect_ports=tuple(int(p) for p in raw["connect_ports"]),
            scope=bool(raw["scope"]),
            limits={str(k): int(v) for k, v in raw["limits"].items()},
            uid=None if raw.get("uid") is None else int(raw["uid"]),
            gid=None if raw.get("gid") is None else int(raw["gid"]),
            aliases=tuple(str(a) for a in raw.get("aliases", ())),
        )


def build_plan(
    *,
    abi: int,
    mode: str,
    read: Iterable[Path],
    write: Iterable[Path],
    protected: Iterable[Path],
    connect_ports: Iterable[int],
    limits: dict[str, int],
    read_files: Iterable[Path] = (),
    write_files: Iterable[Path] = (),
    read_granted: Iterable[Path] = (),
    uid: int | None = None,
    gid: int | None = None,
    aliases: Iterable[Path] = (),
) -> SandboxPlan:
    """The plan for one replica.

    `read` are broad roots (the Python environment, /usr, /etc, ...): a root that holds a
    `protected` path is not granted whole but carved around it (its names are listable, every
    child that holds nothing protected is readable, and so on down), and a root inside a
    protected path is dropped. `write` (its scratch and checkpoint folders), the files and
    `read_granted` (folders or files to read that the caller checked hold no secret, even
    inside a protected path) are granted as given: the caller has checked they are the
    replica's own. Paths that do not exist are left out (Landlock rules need an open file).
    """
    guarded = sorted({_real(p) for p in protected})
    rules: dict[str, str] = {}

    def grant(path: str, right: str) -> None:
        if rules.get(path) in {"write", "rw-file"}:
            return
        rules[path] = right

    for root in sorted({_real(p) for p in read}):
        if os.path.exists(root):
            _carve(root, guarded, grant, budget=[_MAX_CARVED])
    for path in read_files:
        real = _real(path)
        if os.path.isfile(real) and not _inside_any(real, guarded):
            grant(real, "read-file")
    for path in read_granted:
        real = _real(path)
        if os.path.exists(real):
            grant(real, "read")
    for path in write:
        real = _real(path)
        if os.path.isdir(real):
            rules[real] = "write"
    for path in write_files:
        real = _real(path)
        if os.path.exists(real):
            rules[real] = "rw-file"
    return SandboxPlan(
        abi=abi,
        mode=mode,
        fs=tuple(sorted(rules.items())),
        connect_ports=tuple(sorted({p for p in connect_ports if 0 < p < 65536})),
        scope=True,
        limits=dict(sorted(limits.items())),
        uid=uid,
        gid=gid,
        aliases=tuple(os.path.abspath(a) for a in aliases) if uid is not None else (),
    )


def _carve(path: str, guarded: list[str], grant: object, *, budget: list[int]) -> None:
    assert callable(grant)
    if _inside_any(path, guarded):
        return
    holds = [g for g in guarded if g.startswith(path.rstrip("/") + "/")]
    if not holds:
        grant(path, "read")
        return
    if not os.path.isdir(path):
        return
    grant(path, "list")
    try:
        children = sorted(os.listdir(path))
    except OSError:
        return
    for name in children:
        budget[0] -= 1
        if budget[0] < 0:
            return
        child = os.path.join(path, name)
        real = _real(Path(child))
        if real != child and any(g == real or g.startswith(real + "/") for g in guarded):
            continue  # a link to (or above) something protected
        _carve(real if real != child else child, guarded, grant, budget=budget)


def _inside_any(path: str, guarded: list[str]) -> bool:
    return any(path == g or path.startswith(g.rstrip("/") + "/") for g in guarded)


def _real(path: Path | str) -> str:
    return os.path.realpath(os.fspath(path))
