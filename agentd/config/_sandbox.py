"""[sandbox] in agentd.toml (the defaults) and in agent.toml (what one agent adds)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from agentd.config._section import _Section

__all__ = ["AgentSandboxSpec", "SandboxConfig", "SandboxLimits"]


class SandboxLimits(_Section):
    """Per-process resource limits of a replica (setrlimit; 0: no limit)."""

    address_space_bytes: int = Field(8 << 30, ge=0)
    """RLIMIT_AS: virtual memory of each process (threads' stacks count)."""
    open_files: int = Field(4096, ge=0)
    """RLIMIT_NOFILE."""
    processes: int = Field(0, ge=0)
    """RLIMIT_NPROC: counts every process and thread of the user, not of the replica: only
    sensible when replicas run under a uid of their own (0: no limit)."""
    cpu_time_s: int = Field(0, ge=0)
    """RLIMIT_CPU: CPU seconds over the replica's whole life (it is then killed and restarted)."""


class SandboxConfig(SandboxLimits):
    """[sandbox]: the kernel sandbox every agent replica runs in (docs/sandbox.md)."""

    mode: Literal["enforce", "warn", "off"] = "enforce"
    """enforce: a replica that cannot enter its sandbox does not start; warn: it starts without
    and its log says so; off: no sandbox."""
    require: bool = False
    """Refuse to start the daemon when the kernel cannot enforce everything (Landlock ABI < 6)."""
    users: Literal["auto", "off", "require"] = "auto"
    """auto: each agent's replicas run under a uid of their own when the daemon may switch users
    (root: CAP_SETUID, CAP_SETGID, CAP_SYS_ADMIN), else as the daemon's user; off: always as the
    daemon's user; require: refuse to start without the capabilities."""
    uid_base: int = Field(3_000_000, ge=1000, le=2**31 - 2**20)
    """The first uid given to an agent (a range no account of the host uses)."""
    uid_count: int = Field(65_536, ge=1, le=2**20)
    """How many uids from uid_base agents may take."""


class AgentSandboxSpec(_Section):
    """[sandbox] in agent.toml: what this agent needs beyond the defaults. Paths are relative to
    the agent's folder; none may point into the state directory's secrets."""

    read: list[Path] = []
    write: list[Path] = []
    connect_ports: list[Annotated[int, Field(ge=1, le=65535)]] = []
    address_space_bytes: int | None = Field(None, ge=0)
    open_files: int | None = Field(None, ge=0)
    processes: int | None = Field(None, ge=0)
    cpu_time_s: int | None = Field(None, ge=0)
