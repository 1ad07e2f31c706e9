"""The daemon's side of the replica sandbox (agentd.sandbox): what the host offers, what each
agent's replicas may reach, and the folders they own.

A replica reads the Python environment, its own folder and the system's libraries and
certificates; writes only its scratch folder (<state>/scratch/<agent>) and its checkpoint folder
(<state>/checkpoints/<agent>); connects by TCP only to NATS, the LLM gateway and the ports its
spec declares. The rest of the state directory (credentials, keys, the decision log, the NATS
store, logs) and the daemon's key files are out of reach (docs/sandbox.md).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import agentd
from agentd.config import AgentSandboxSpec, Config, LoadedAgent
from agentd.errors import ConfigError
from agentd.sandbox import SandboxPlan, build_plan, kernel_abi, missing_protections

__all__ = [
    "ABI_OVERRIDE_ENV",
    "DEVICES_WRITE",
    "agent_paths",
    "agent_sandbox_problems",
    "expand_paths",
    "host_abi",
    "prepare_replica_dirs",
    "protected_paths",
    "replica_plan",
    "sandbox_limits",
    "sandbox_startup_check",
    "secret_problem",
    "system_files",
    "system_roots",
]

log = logging.getLogger("agentd.sandbox")

ABI_OVERRIDE_ENV = "AGENTD_SANDBOX_MAX_ABI"
"""Testing only: treat the kernel as offering at most this Landlock ABI (0: none)."""

_SYSTEM_READ = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/proc", "/sys")
_DEVICES_READ = ("/dev/urandom", "/dev/random", "/dev/zero", "/dev/full")
DEVICES_WRITE = ("/dev/null",)


def host_abi(environ: Mapping[str, str] | None = None) -> int:
    """The Landlock ABI replicas get: the kernel's, lowered by $AGENTD_SANDBOX_MAX_ABI."""
    env = os.environ if environ is None else environ
    abi = kernel_abi()
    cap = env.get(ABI_OVERRIDE_ENV)
    if cap:
        try:
            abi = min(abi, int(cap))
        except ValueError:
            raise ConfigError(ABI_OVERRIDE_ENV, [f"not an integer: {cap!r}"]) from None
    return max(abi, 0)


def sandbox_startup_check(config: Config, source: str, abi: int) -> list[str]:
    """What the kernel cannot protect (logged by `agentd run`); ConfigError when
    [sandbox].require is set and anything is missing."""
    if config.sandbox.mode == "off":
        log.warning(
            "[sandbox].mode = off: agent replicas and isolated tools run unsandboxed "
            "(docs/sandbox.md)"
        )
        return []
    missing = missing_protections(abi)
    if not missing:
        log.info(
            "sandbox: Landlock ABI %d, mode %s: every protection enforced", abi, config.sandbox.mode
        )
        return []
    if config.sandbox.require:
        raise ConfigError(
            source,
            [
                f"[sandbox].require = true but this kernel offers Landlock ABI {abi} and "
                f"agentd needs 6: missing {'; '.join(missing)}. Run on Linux >= 6.12 with "
                "Landlock enabled (lsm=landlock,...), or set require = false to run with what "
                "the kernel offers"
            ],
        )
    log.warning(
        "sandbox: this kernel offers Landlock ABI %d (mode %s); NOT protected: %s. Replicas "
        "and isolated tools still get no-new-privs and resource limits; set "
        "[sandbox].require = true to refuse",
        abi,
        config.sandbox.mode,
        "; ".join(missing),
    )
    return missing


def protected_paths(config: Config) -> list[Path]:
    """What no replica may reach: the state directory and the daemon's key and credential
    files wherever they are."""
    paths = [config.daemon.state_dir]
    for candidate in (
        config.bus.creds_file,
        config.bus.tls.key_file,
        config.gateway.tls.key_file,
        config.trace.witness.file,
    ):
        if candidate is not None:
            paths.append(Path(candidate))
    return paths


_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def agent_paths(agent: LoadedAgent, paths: list[Path]) -> list[Path]:
    """agent.toml [sandbox] paths made absolute against the agent's folder, with $VAR and
    ${VAR} taken from the daemon's environment and the spec's env; an entry naming a variable
    that is not set is left out (and logged)."""
    env = {**os.environ, **agent.spec.env}
    return expand_paths(paths, env, agent.directory, what=f"{agent.name}: [sandbox]")


def expand_paths(
    paths: Iterable[Path | str],
    env: Mapping[str, str],
    base: Path,
    *,
    what: str,
    level: int = logging.WARNING,
) -> list[Path]:
    """`paths` with $VAR and ${VAR} taken from `env`, made absolute against `base` and
    resolved; an entry naming a variable that is not set is left out (logged at `level`,
    naming `what`)."""
    out = []
    for path in paths:
        unset = [a or b for a, b in _VAR.findall(str(path)) if (a or b) not in env]
        if unset:
            log.log(level, "%s path %s left out: %s not set", what, path, unset)
            continue
        text = _VAR.sub(lambda m: env[m.group(1) or m.group(2)], str(path))
        out.append(Path(os.path.realpath(base / text)))
    return out


def secret_problem(real: str, guarded: Iterable[str]) -> str | None:
    """Why the resolved path `real` may not be granted: it lies inside, or holds, one of
    `guarded` (resolved paths of agentd's secrets); None when it may."""
    for g in guarded:
        if real == g or real.startswith(g + "/"):
            return (
                f"{real} is inside {g}, which holds agentd's secrets (credentials, keys, the "
                "decision log): no agent or tool may reach it"
            )
        if g.startswith(real.rstrip("/") + "/"):
            return (
                f"{real} holds {g}, agentd's secrets (credentials, keys, the decision log): "
                "name a folder beside it"
            )
    return None


def agent_sandbox_problems(config: Config, agent: LoadedAgent) -> list[str]:
    """agent.toml [sandbox] paths that point into (or above) the state directory's secrets,
    each with its TOML path."""
    problems = []
    guarded = [os.path.realpath(p) for p in protected_paths(config)]
    box = agent.spec.sandbox
    for key, paths in (("read", box.read), ("write", box.write)):
        for i, path in enumerate(paths):
            found = agent_paths(agent, [path])
            if not found:
                continue
            why = secret_problem(str(found[0]), guarded)
            if why is not None:
                problems.append(f"sandbox.{key}[{i}] = {str(path)!r}: {why}")
    if agent.project is not None:  # its replicas read it: the same rule as sandbox.read
        why = secret_problem(os.path.realpath(agent.project), guarded)
        if why is not None:
            problems.append(f"project = {agent.spec.project!r}: {why}")
    return problems


def prepare_replica_dirs(
    config: Config, name: str, *, checkpoint: bool
) -> tuple[Path, Path | None]:
    """Create (mode 0700) the agent's scratch folder and, for SQLite checkpoints, its own
    checkpoint folder, moving a database from the old shared folder into it once."""
    state = config.daemon.state_dir
    scratch = state / "scratch" / name
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not checkpoint or config.checkpoints.backend != "sqlite":
        return scratch, None
    folder = state / "checkpoints" / name
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    old = state / "checkpoints" / f"{name}.sqlite"
    if old.is_file() and not (folder / old.name).exists():
        for suffix in ("", "-wal", "-shm"):  # before any replica of the agent runs
            source = old.with_name(old.name + suffix)
            if source.exists():
                shutil.move(source, folder / source.name)
        log.info("checkpoints of %s moved into %s (one folder per agent)", name, folder)
    return scratch, folder


def replica_plan(
    config: Config,
    agent: LoadedAgent,
    env: Mapping[str, str],
    *,
    abi: int,
    scratch: Path,
    checkpoints: Path | None,
    uid: int | None = None,
) -> SandboxPlan:
    """The sandbox of one replica of `agent`, run with environment `env`."""
    cfg = config.sandbox
    box = agent.spec.sandbox
    read = [*system_roots(env), agent.directory, *agent_paths(agent, box.read)]
    if agent.project is not None:  # a LangGraph project's graph is read where it lives
        read.append(agent.project)
    write = [scratch, *agent_paths(agent, box.write)]
    if checkpoints is not None:
        write.append(checkpoints)
    limits = sandbox_limits(config, box)
    return build_plan(
        abi=abi,
        mode=cfg.mode,
        read=read,
        write=write,
        protected=protected_paths(config),
        connect_ports=[*_ports(config, env), *box.connect_ports],
        limits=limits,
        read_files=system_files(config),
        write_files=[Path(p) for p in DEVICES_WRITE],
        uid=uid,
        gid=uid,
        aliases=[agent.directory],
    )


def system_roots(env: Mapping[str, str]) -> list[Path]:
    """What every sandboxed Python process reads: its environment (prefixes, `sys.path`,
    `PYTHONPATH` of `env`, agentd's own tree) and the system's directories."""
    python_path = env.get("PYTHONPATH", os.environ.get("PYTHONPATH", "")).split(":")
    return [
        Path(sys.prefix),
        Path(sys.base_prefix),
        Path(sys.exec_prefix),
        Path(sys.base_exec_prefix),
        Path(agentd.__file__).resolve().parents[1],
        *(Path(p) for p in sys.path if p),
        *(Path(p) for p in python_path if p),
        *(Path(p) for p in _SYSTEM_READ),
    ]


def system_files(config: Config) -> list[Path]:
    """The device files every sandboxed process reads, and the TLS CA files."""
    files = [Path(p) for p in _DEVICES_READ]
    for ca in (config.bus.tls.ca_file, config.gateway.tls.ca_file):
        if ca is not None:
            files.append(Path(ca))
    return files


def sandbox_limits(config: Config, own: AgentSandboxSpec | None = None) -> dict[str, int]:
    """The setrlimit values: [sandbox]'s, with `own` (an agent's [sandbox]) over them."""
    cfg = config.sandbox
    return {
        "AS": _pick(own.address_space_bytes if own else None, cfg.address_space_bytes),
        "NOFILE": _pick(own.open_files if own else None, cfg.open_files),
        "NPROC": _pick(own.processes if own else None, cfg.processes),
        "CPU": _pick(own.cpu_time_s if own else None, cfg.cpu_time_s),
    }


def _pick(own: int | None, default: int) -> int:
    return default if own is None else own


def _ports(config: Config, env: Mapping[str, str]) -> list[int]:
    """NATS, the LLM gateway, and what the environment points the replica at (OTLP, a
    PostgreSQL checkpoint store)."""
    urls = [*env.get("AGENTD_NATS_URL", "").split(","), env.get("AGENTD_LLM_URL", "")]
    if config.trace.otlp.enabled:
        urls.append(config.trace.otlp.endpoint)
    if env.get("AGENTD_CHECKPOINT_DSN"):
        urls.append(env["AGENTD_CHECKPOINT_DSN"])
    ports = []
    defaults = {
        "nats": 4222,
        "tls": 4222,
        "http": 80,
        "https": 443,
        "postgresql": 5432,
        "postgres": 5432,
    }
    for url in urls:
        url = url.strip()
        if not url:
            continue
        try:
            parts = urlsplit(url)
            port = parts.port or defaults.get(parts.scheme)
        except ValueError:
            continue
        if port:
            ports.append(port)
    return ports
