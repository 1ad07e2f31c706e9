"""What `agentd run` checks before it starts any service, as a list `agentd config check` prints.

The file itself is checked when it is loaded (every bad field, with its TOML path). These are
the checks about this host: the policy files the config names, the model directories and vLLM
interpreters of `[models.*]`, whether the pools fit this host's devices, the environment
variable a postgres checkpoint backend reads, and the kernel sandbox `[sandbox].require`
demands. `Daemon.__init__` makes the same checks in the same order (itself: it keeps the
objects they build) and stops at the first that fails; `config check` runs them all and reports
each. A new pre-start check in the daemon belongs here too (tests/test_config_check_host.py
holds a config that fails several and `run` refusing it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from agentd.config import LoadedConfig
from agentd.errors import AgentdError, ConfigError

__all__ = ["HostCheck", "host_checks"]


@dataclass(frozen=True)
class HostCheck:
    name: str
    problem: str | None  # None: passed


def host_checks(loaded: LoadedConfig) -> list[HostCheck]:
    """Every pre-start check of `agentd run`, each with what failed (None: ok)."""
    cfg = loaded.config
    source = loaded.source

    def policy() -> None:
        from agentd.daemon._authority import Authority

        Authority(cfg.policy)

    def model_files() -> None:
        from agentd.inference import missing_files

        if missing := missing_files(cfg.models):
            raise ConfigError(source, missing)

    def placement() -> None:
        from agentd.inference import ModelPools

        ModelPools(cfg.models, state_dir=cfg.daemon.state_dir, record=_ignore).check_placement()

    def checkpoints() -> None:
        if missing := cfg.checkpoints.environment_problems(os.environ):
            raise ConfigError(source, missing)

    def sandbox() -> None:
        from agentd.daemon._sandbox import host_abi, sandbox_startup_check

        sandbox_startup_check(cfg, str(source), host_abi())

    checks: list[tuple[str, Callable[[], None]]] = [
        (f"policy files in {cfg.policy.dir}", policy),
        ("model directories and vLLM interpreters ([models.*])", model_files),
        ("model pools fit this host's GPUs and cores", placement),
        (f"checkpoint backend {cfg.checkpoints.backend} ([checkpoints])", checkpoints),
        (f"kernel sandbox ([sandbox] mode {cfg.sandbox.mode})", sandbox),
    ]
    results = []
    for name, check in checks:
        try:
            check()
        except AgentdError as exc:
            results.append(HostCheck(name, str(exc)))
        else:
            results.append(HostCheck(name, None))
    return results


def _ignore(kind: str, **fields: object) -> None:
    """Pools built only to check placement record nothing."""
