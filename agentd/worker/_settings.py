"""What a worker is told by the daemon that spawns it: environment variables, nothing else.

A worker never reads agentd.toml: it gets exactly the settings it needs, so a replica started by
hand (or on another host) behaves the same as one the daemon spawned.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentd.errors import ConfigError
from agentd.worker._checkpoints import CheckpointSettings

__all__ = ["SECRETS_ENV", "WorkerSettings", "take_secrets"]

SECRETS_ENV = "AGENTD_SECRETS"
"""Set to "stdin" by the daemon: the replica's secrets (NATS credentials, LLM token, a
checkpoint store's connection string) come as a JSON object on stdin, not in the environment,
which another process of the same user can read in /proc/<pid>/environ."""


def take_secrets(environ: Any = None) -> None:
    """With AGENTD_SECRETS=stdin, read the secrets from stdin into this process's environment
    (os.environ: not /proc/<pid>/environ, which keeps the environment the process started
    with) and put /dev/null on stdin."""
    env = os.environ if environ is None else environ
    if env.get(SECRETS_ENV) != "stdin":
        return
    import sys

    text = sys.stdin.buffer.read(1 << 16)
    try:
        secrets = json.loads(text) if text else {}
    except ValueError as exc:
        raise ConfigError("the worker's stdin", [f"secrets: not JSON ({exc})"]) from None
    if not isinstance(secrets, dict) or not all(isinstance(v, str) for v in secrets.values()):
        raise ConfigError("the worker's stdin", ["secrets: must be a JSON object of strings"])
    env.update(secrets)
    del env[SECRETS_ENV]
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    agent: str
    replica: str
    agent_dir: Path
    nats_url: str
    prefix: str = "agentd"
    heartbeat_s: float = 1.0
    drain_grace_s: float = 10.0
    # the inbox as the daemon configured it ([inbox], the agent spec): a replica's NATS account
    # cannot read the stream's or the consumer's settings
    dedupe_window_s: float = 120.0
    ack_wait_s: float = 30.0
    max_deliver: int = 5
    state_dir: Path | None = None
    params: dict[str, Any] | None = None
    creds_file: Path | None = None
    """The replica's NATS credentials (agentd.identity) as a file; None where NATS needs none
    or where `creds_json` carries them."""
    creds_json: str | None = field(default=None, repr=False)
    """The credentials themselves (AGENTD_CREDS_JSON): how the daemon passes them, so a
    sandboxed replica needs no path into the credentials directory."""
    tls_ca_file: Path | None = None
    checkpoints: CheckpointSettings = field(default_factory=CheckpointSettings)
    """Where the graph's conversation state lives ([checkpoints])."""

    def to_env(self) -> dict[str, str]:
        env = {
            "AGENTD_AGENT": self.agent,
            "AGENTD_REPLICA": self.replica,
            "AGENTD_AGENT_DIR": str(self.agent_dir),
            "AGENTD_NATS_URL": self.nats_url,
            "AGENTD_PREFIX": self.prefix,
            "AGENTD_HEARTBEAT_S": str(self.heartbeat_s),
            "AGENTD_DRAIN_GRACE_S": str(self.drain_grace_s),
            "AGENTD_DEDUPE_WINDOW_S": str(self.dedupe_window_s),
            "AGENTD_ACK_WAIT_S": str(self.ack_wait_s),
            "AGENTD_MAX_DELIVER": str(self.max_deliver),
        }
        if self.state_dir is not None:
            env["AGENTD_STATE_DIR"] = str(self.state_dir)
        if self.params is not None:
            env["AGENTD_PARAMS"] = json.dumps(self.params)
        if self.creds_file is not None:
            env["AGENTD_CREDS"] = str(self.creds_file)
        if self.creds_json is not None:
            env["AGENTD_CREDS_JSON"] = self.creds_json
        if self.tls_ca_file is not None:
            env["AGENTD_TLS_CA_FILE"] = str(self.tls_ca_file)
        env.update(self.checkpoints.to_env())
        return env

    @classmethod
    def from_env(cls, agent: str, environ: dict[str, str] | None = None) -> WorkerSettings:
        env = dict(os.environ if environ is None else environ)
        missing = [k for k in ("AGENTD_AGENT_DIR", "AGENTD_NATS_URL") if not env.get(k)]
        if missing:
            raise ConfigError("the worker's environment", [f"{k}: not set" for k in missing])
        problems: list[str] = []

        def number(key: str, default: float) -> float:
            try:
                value = float(env.get(key, default))
            except ValueError:
                problems.append(f"{key}: not a number ({env[key]!r})")
                return default
            if value <= 0:
                problems.append(f"{key}: must be positive")
            return value

        settings = cls(
            agent=agent,
            replica=env.get("AGENTD_REPLICA") or f"{agent}-{os.getpid()}",
            agent_dir=Path(env["AGENTD_AGENT_DIR"]),
            nats_url=env["AGENTD_NATS_URL"],
            prefix=env.get("AGENTD_PREFIX", "agentd"),
            heartbeat_s=number("AGENTD_HEARTBEAT_S", 1.0),
            drain_grace_s=number("AGENTD_DRAIN_GRACE_S", 10.0),
            dedupe_window_s=number("AGENTD_DEDUPE_WINDOW_S", 120.0),
            ack_wait_s=number("AGENTD_ACK_WAIT_S", 30.0),
            max_deliver=int(number("AGENTD_MAX_DELIVER", 5)),
            state_dir=Path(env["AGENTD_STATE_DIR"]) if env.get("AGENTD_STATE_DIR") else None,
            params=_params(env.get("AGENTD_PARAMS"), problems),
            creds_file=Path(env["AGENTD_CREDS"]) if env.get("AGENTD_CREDS") else None,
            creds_json=env.get("AGENTD_CREDS_JSON") or None,
            tls_ca_file=(
                Path(env["AGENTD_TLS_CA_FILE"]) if env.get("AGENTD_TLS_CA_FILE") else None
            ),
            checkpoints=CheckpointSettings.from_env(env, problems),
        )
        if problems:
            raise ConfigError("the worker's environment", problems)
        return settings


def _params(text: str | None, problems: list[str]) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        problems.append(f"AGENTD_PARAMS: not JSON ({exc})")
        return None
    if not isinstance(value, dict):
        problems.append("AGENTD_PARAMS: must be a JSON object")
        return None
    return value
