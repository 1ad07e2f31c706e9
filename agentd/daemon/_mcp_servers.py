"""[tools.mcp.<server>]: the daemon's MCP servers, started, sandboxed, supervised and mounted.

A stdio server is a child of the generic supervisor, like a replica: restarted when it dies
(with backoff; given up on past its restart intensity), stopped with the daemon, its stderr in
`<state>/logs/mcp-<server>.log`. It starts through `_mcp_launch.py` (agentd.tools), which hands
it a Unix socket (abstract namespace; only the daemon's pid may connect) as stdin and stdout,
under the sandbox's exec wrapper with a plan like an isolated tool's: it reads the Python
environment, the system's directories, its `cwd` and what it declares in `read`; writes
`<state>/scratch/mcp/<server>/` (its $TMPDIR) and its `write`; connects by TCP only to its
`connect_ports`. Its environment is the daemon's with agentd's secrets and every MCP header
variable blanked, plus its own `env`.

An HTTP server is reached at its `url`, each header's value read from the environment variable
`headers_env` names. Either way an `McpMount` keeps its tools in the registry.

A bad server (its command not found, a header variable unset, a declared path into the secrets)
is an error naming it, logged, and left unmounted; the daemon and the other tools serve on.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus

from agentd.config import Config, McpServerConfig
from agentd.daemon._replica_spec import SECRET_KEYS
from agentd.daemon._sandbox import (
    DEVICES_WRITE,
    expand_paths,
    protected_paths,
    sandbox_limits,
    secret_problem,
    system_files,
    system_roots,
)
from agentd.daemon._tool_sandbox import tool_secrets
from agentd.sandbox import ENV_PLAN, build_plan, wrapper_argv
from agentd.supervisor import ChildSpec, RestartPolicy, RestartType, Supervisor
from agentd.tools import MCP_LAUNCHER, ToolRegistry

if TYPE_CHECKING:
    from agentd.tools import McpMount

__all__ = ["McpServers"]

log = logging.getLogger("agentd.tools")

RESTART = RestartPolicy(
    type=RestartType.PERMANENT,
    max_restarts=10,
    window_s=60.0,
    backoff_initial_s=0.1,
    backoff_max_s=5.0,
)


class McpServers:
    """Starts and mounts every configured MCP server; `problems` names what was refused."""

    def __init__(
        self, config: Config, supervisor: Supervisor, registry: ToolRegistry, *, abi: int
    ) -> None:
        self._config = config
        self._supervisor = supervisor
        self._registry = registry
        self._abi = abi
        self.mounts: dict[str, McpMount] = {}
        self.problems: dict[str, list[str]] = {}
        self._stopped = anyio.Event()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start every server, wait (each up to its `start_timeout_s`) for its tools, report
        started, and keep them mounted until `shutdown()`."""
        if not self._config.tools.mcp:  # the MCP SDK is imported only for servers
            task_status.started()
            await self._stopped.wait()
            return
        from agentd.tools import McpMount, mcp_connector

        async with anyio.create_task_group() as tg:
            for rank, (name, server) in enumerate(self._config.tools.mcp.items()):
                try:
                    address = await self._start(name, server)
                    connector = mcp_connector(name, server, address=address)
                    mount = McpMount(name, server, self._registry, connector, rank=rank)
                except (LookupError, OSError, ValueError) as exc:
                    self.problems[name] = [f"[tools.mcp.{name}]: {exc}; not mounted"]
                    log.error("[tools.mcp.%s]: %s; not mounted", name, exc)
                    continue
                self.mounts[name] = mount
                await tg.start(mount.run)
            for name, mount in self.mounts.items():
                with anyio.move_on_after(self._config.tools.mcp[name].start_timeout_s):
                    await mount.ready.wait()
                if not mount.ready.is_set():
                    log.error(
                        "MCP server %s did not list its tools within %gs; serving without "
                        "them until it does",
                        name,
                        self._config.tools.mcp[name].start_timeout_s,
                    )
            task_status.started()
            await self._stopped.wait()
            tg.cancel_scope.cancel()

    async def shutdown(self) -> None:
        """Stop mounting (the supervisor stops the servers' processes)."""
        self._stopped.set()

    def problems_of(self, name: str) -> list[str]:
        """What server `name` had refused: at start, and in its last listing of tools."""
        mount = self.mounts.get(name)
        return [*self.problems.get(name, []), *(mount.problems if mount else [])]

    async def _start(self, name: str, server: McpServerConfig) -> str | None:
        """Start a stdio server under the supervisor; its socket's address (None: HTTP)."""
        if server.command is None:
            return None
        cwd = server.cwd or Path.cwd()
        env = self._environment(name, server)
        program = _resolve(server.command, cwd, env)
        address = f"@agentd-mcp-{os.getpid()}-{name}"
        argv = [sys.executable, "-I", "-S", MCP_LAUNCHER, address, "--", program, *server.args]
        scratch = self._config.daemon.state_dir / "scratch" / "mcp" / name
        scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
        env |= {"TMPDIR": str(scratch), "AGENTD_SCRATCH_DIR": str(scratch)}
        if self._config.sandbox.mode != "off":
            env[ENV_PLAN] = self._plan(name, server, cwd, scratch, env)
            argv = wrapper_argv(argv)
        logs = self._config.daemon.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        await self._supervisor.start(
            ChildSpec(
                name=f"mcp-{name}",
                argv=argv,
                env=env,
                cwd=cwd,
                restart=RESTART,
                stop_grace_s=5.0,
                log_path=logs / f"mcp-{name}.log",
            )
        )
        return address

    def _environment(self, name: str, server: McpServerConfig) -> dict[str, str]:
        headers = {v for s in self._config.tools.mcp.values() for v in s.headers_env.values()}
        # blank, not absent: a child's environment is merged over the daemon's
        env = dict.fromkeys({*SECRET_KEYS, self._config.checkpoints.dsn_env, *headers}, "")
        return env | dict(server.env)

    def _plan(
        self, name: str, server: McpServerConfig, cwd: Path, scratch: Path, env: Mapping[str, str]
    ) -> str:
        config = self._config
        merged = {**os.environ, **env}
        guarded = [os.path.realpath(p) for p in tool_secrets(config)]
        granted: dict[str, list[Path]] = {"read": [], "write": []}
        problems = []
        for key in ("read", "write"):
            for i, entry in enumerate(getattr(server, key)):
                found = expand_paths([entry], merged, cwd, what=f"[tools.mcp.{name}].{key}")
                if not found:
                    continue
                why = secret_problem(os.path.realpath(found[0]), guarded)
                if why is not None:
                    problems.append(f"{key}[{i}] = {entry!r}: {why}")
                else:
                    granted[key].append(found[0])
        if problems:
            raise ValueError("; ".join(problems))
        folders, files = [scratch], []
        for path in granted["write"]:
            if path.is_file():
                files.append(path)
            else:
                path.mkdir(parents=True, exist_ok=True, mode=0o700)
                folders.append(path)
        plan = build_plan(
            abi=self._abi,
            mode=config.sandbox.mode,
            read=[*system_roots(merged), cwd],
            read_granted=granted["read"],
            write=folders,
            write_files=[*files, *(Path(p) for p in DEVICES_WRITE)],
            read_files=system_files(config),
            protected=protected_paths(config),
            connect_ports=list(server.connect_ports),
            limits=sandbox_limits(config),
        )
        log.info(
            "MCP server %s runs in its sandbox: landlock-abi=%d digest=%s mode=%s",
            name,
            plan.abi,
            plan.digest,
            plan.mode,
        )
        return plan.to_json()


def _resolve(command: str, cwd: Path, env: Mapping[str, str]) -> str:
    """The program to run: `python` / `python3` is the daemon's interpreter; a command with a
    slash is relative to `cwd`; others are looked up on PATH. `LookupError` when not found."""
    if command in ("python", "python3"):
        return sys.executable
    path = env.get("PATH") or os.environ.get("PATH", "")
    if "/" in command:
        candidate = Path(command) if Path(command).is_absolute() else cwd / command
        found = str(candidate) if os.access(candidate, os.X_OK) and candidate.is_file() else None
    else:
        found = shutil.which(command, path=path)
    if found is None:
        raise LookupError(
            f"command {command!r} not found (PATH, or relative to {cwd}) or not executable"
        )
    return found
