"""The sandbox of isolated tool calls: each isolated tool's process runs under the replicas'
machinery (agentd.sandbox's plan and exec wrapper), with its own rules (docs/sandbox.md,
"Isolated tools").

An isolated tool reads the Python environment, the tools folder and the system's directories;
writes only its scratch folder (<state>/scratch/tool/<tool>: `tool` is a reserved agent name, so
no agent's scratch folder is the same) and the paths it declares; connects by TCP only to the
ports it declares; binds nothing. Declarations come from `@tool(read=, write=, connect_ports=)`,
each replaced by `[tools.overrides."<tool>"]` when that sets it. A declared path inside (or
holding) the state directory's secrets is an error naming the tool file or the TOML key.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from agentd.config import Config, ToolOverride
from agentd.daemon._sandbox import (
    DEVICES_WRITE,
    expand_paths,
    protected_paths,
    sandbox_limits,
    secret_problem,
    system_files,
    system_roots,
)
from agentd.errors import ConfigError
from agentd.sandbox import build_plan
from agentd.tools import ToolRegistry, ToolSandbox, ToolSpec

__all__ = ["tool_sandboxes", "tool_secrets"]

log = logging.getLogger("agentd.sandbox")

T = TypeVar("T")


def tool_secrets(config: Config) -> list[Path]:
    """What no tool may declare: the state directory's secrets and other processes' files
    (credentials, identity, the decision log and its key, the NATS store and its config, logs,
    checkpoints, scratch folders), and the daemon's key files wherever they are."""
    state = config.daemon.state_dir
    trace = config.trace
    log_file = state / trace.log_file
    names = (
        "credentials",
        "identity",
        "logs",
        "checkpoints",
        "scratch",
        "models",
        "nats-server.conf",
        "agentd.pid",
        "children.json",
    )
    secrets = [
        *(state / name for name in names),
        log_file,
        *(log_file.with_name(log_file.name + s) for s in ("-wal", "-shm", "-journal")),
        state / trace.signing_key_file,
        config.bus.embedded.store_dir or state / "nats",
        state / config.identity.bootstrap_token_file,
        *protected_paths(config)[1:],  # the daemon's key files
    ]
    if trace.witness.file is not None:  # relative: in the state directory
        secrets.append(state / trace.witness.file)
    return secrets


def tool_sandboxes(
    config: Config, registry: ToolRegistry, *, abi: int, environ: Mapping[str, str] | None = None
) -> dict[str, ToolSandbox]:
    """The sandbox of every tool that runs isolated (none when [sandbox].mode = "off"),
    creating its scratch folder and the folders it declares to write. Raises `ConfigError`
    naming every declaration that points into the secrets, whether the tool is isolated or not.
    """
    env = os.environ if environ is None else environ
    guarded = [os.path.realpath(p) for p in tool_secrets(config)]
    problems: list[str] = []
    boxes: dict[str, ToolSandbox] = {}
    for name in registry.names:
        spec = registry.get(name)
        assert spec is not None
        override = config.tools.overrides.get(name)
        read = _declared(config, spec, override, "read", env, guarded, problems)
        write = _declared(config, spec, override, "write", env, guarded, problems)
        ports = _pick(override.connect_ports if override else None, list(spec.connect_ports))
        isolated = _pick(override.isolated if override else None, spec.isolated)
        if not isolated:
            if read or write or ports:
                log.info("tool %s declares sandbox rules but runs in the daemon", name)
            continue
        if config.sandbox.mode == "off" or problems:
            continue
        boxes[name] = _sandbox(config, spec, env, abi=abi, read=read, write=write, ports=ports)
    if problems:
        raise ConfigError("tools", problems)
    return boxes


def _sandbox(
    config: Config,
    spec: ToolSpec,
    env: Mapping[str, str],
    *,
    abi: int,
    read: list[Path],
    write: list[Path],
    ports: list[int],
) -> ToolSandbox:
    scratch = config.daemon.state_dir / "scratch" / "tool" / spec.name
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    folders, files = [scratch], []
    for path in write:
        if path.is_file():
            files.append(path)
        else:  # a folder, created when missing
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            folders.append(path)
    plan = build_plan(
        abi=abi,
        mode=config.sandbox.mode,
        read=[*system_roots(env), config.tools.dir, spec.file.parent],
        read_granted=read,
        write=folders,
        write_files=[*files, *(Path(p) for p in DEVICES_WRITE)],
        read_files=system_files(config),
        protected=protected_paths(config),
        connect_ports=ports,
        limits=sandbox_limits(config),
    )
    log.info(
        "tool %s runs isolated in its sandbox: landlock-abi=%d digest=%s mode=%s rules=%d "
        "connect_ports=%s write=%s missing: %s",
        spec.name,
        plan.abi,
        plan.digest,
        plan.mode,
        len(plan.fs),
        list(plan.connect_ports),
        [str(p) for p in folders + files],
        "; ".join(plan.missing) or "none",
    )
    return ToolSandbox(plan, scratch)


def _declared(
    config: Config,
    spec: ToolSpec,
    override: ToolOverride | None,
    key: str,
    env: Mapping[str, str],
    guarded: list[str],
    problems: list[str],
) -> list[Path]:
    """The tool's `key` paths (its override's when set), expanded; each one that points into
    the secrets goes to `problems`, naming where it was declared."""
    own = getattr(override, key) if override is not None else None
    if own is not None:
        entries, where, base = own, f'[tools.overrides."{spec.name}"].{key}', config.tools.dir
    else:
        entries = list(getattr(spec, key))
        where, base = f"{spec.where}: tool {spec.name}: {key}", spec.file.parent
    paths = []
    for i, entry in enumerate(entries):
        # a tool may name a variable only some setups set (sql.query: $AGENTD_LOANS_DB)
        what = f"tool {spec.name}: {key}"
        found = expand_paths([entry], env, base, what=what, level=logging.INFO)
        if not found:
            continue
        why = secret_problem(str(found[0]), guarded)
        if why is not None:
            problems.append(f"{where}[{i}] = {entry!r}: {why}")
        else:
            paths.append(found[0])
    return paths


def _pick(own: T | None, declared: T) -> T:
    return declared if own is None else own
