"""How an agent replica is launched: its environment and its child spec for the supervisor.

The environment carries everything the worker needs (agentd.worker.WorkerSettings), the model
pool its LLM nodes use and the gateway's URL and token, the telemetry settings, and the tool
timeout; a checkpoint store's connection string goes only to replicas that keep checkpoints.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from agentd.bus import Credentials
from agentd.config import Config, LoadedAgent
from agentd.daemon._heartbeats import HeartbeatTracker
from agentd.gateway import LLMGateway
from agentd.sandbox import ENV_PLAN, SandboxPlan, wrapper_argv
from agentd.supervisor import ChildSpec, RestartPolicy, RestartType
from agentd.telemetry import TelemetrySettings
from agentd.worker import SECRETS_ENV, CheckpointSettings, WorkerSettings

SECRET_KEYS = frozenset(
    {"AGENTD_CREDS_JSON", "AGENTD_LLM_TOKEN", "OPENAI_API_KEY", "AGENTD_CHECKPOINT_DSN"}
)

__all__ = ["replica_env", "replica_spec"]


def replica_env(
    config: Config,
    agent: LoadedAgent,
    name: str,
    replica: str,
    *,
    nats_url: str,
    params: dict[str, Any] | None = None,
    creds: Path | None = None,
    llm: LLMGateway | None = None,
) -> dict[str, str]:
    """The environment of replica `replica` of agent `name` (a spawned instance's name)."""
    cfg = config
    settings = WorkerSettings(
        agent=name,
        replica=replica,
        agent_dir=agent.directory,
        nats_url=nats_url,
        prefix=cfg.bus.prefix,
        heartbeat_s=cfg.agents.heartbeat_s,
        drain_grace_s=cfg.daemon.drain_grace_s,
        dedupe_window_s=cfg.inbox.duplicate_window_s,
        ack_wait_s=cfg.inbox.ack_wait_s,
        max_deliver=agent.spec.max_deliveries or cfg.inbox.max_deliver,
        state_dir=cfg.daemon.state_dir,
        params=params,
        # the credentials themselves, not their path: a sandboxed replica cannot open the
        # credentials directory (docs/sandbox.md, "Secrets by handle")
        creds_json=Credentials.load(creds).to_json() if creds is not None else None,
        tls_ca_file=cfg.bus.tls.ca_file,
        # only a replica that keeps checkpoints is told the database's connection string
        checkpoints=(
            CheckpointSettings.from_config(cfg.checkpoints, os.environ)
            if agent.spec.checkpoint
            else CheckpointSettings()
        ),
    )
    env = {**agent.spec.env, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
    if cfg.checkpoints.backend == "postgres" and not agent.spec.checkpoint:
        # a replica inherits the daemon's environment: blank the variable with the password
        env[cfg.checkpoints.dsn_env] = ""
    if agent.spec.model_pool:  # the pool its LLM nodes use, through the gateway
        env["AGENTD_MODEL_POOL"] = agent.spec.model_pool
    # the replica traces as the daemon does: same export, redaction and content settings
    env.update(TelemetrySettings.from_config(cfg.trace).to_env())
    if llm is not None and llm.url is not None:
        # the replica's OpenAI clients reach its model pools through the LLM gateway
        env |= llm.worker_env(name, replica)
    # a tool call may wait for a person's approval, then run: the worker waits that long
    tools = cfg.tools
    env["AGENTD_TOOL_TIMEOUT_S"] = str(tools.approval_timeout_s + tools.call_timeout_s + 30)
    return env


def replica_spec(
    config: Config,
    agent: LoadedAgent,
    name: str,
    replica: str,
    env: dict[str, str],
    heartbeats: HeartbeatTracker,
    sandbox: SandboxPlan | None = None,
) -> ChildSpec:
    """The supervisor's spec: ready at the first heartbeat, alive while heartbeats come; with
    `sandbox`, the worker starts under the sandbox's exec wrapper."""
    cfg = config
    restart = agent.spec.restart
    argv = [sys.executable, "-m", "agentd.worker", "--agent", name]
    if sandbox is not None:
        argv = wrapper_argv(argv)
        env = {**env, ENV_PLAN: sandbox.to_json()}
    # secrets by handle: on the replica's stdin, not in an environment /proc shows
    secret_keys = {*SECRET_KEYS, cfg.checkpoints.dsn_env}
    secrets = {k: v for k, v in env.items() if k in secret_keys and v}
    # blank, not absent: the child's environment is merged over the daemon's
    env = {**env, **dict.fromkeys(secrets, "")}
    env[SECRETS_ENV] = "stdin"
    return ChildSpec(
        name=replica,
        argv=argv,
        env=env,
        cwd=agent.directory,
        restart=RestartPolicy(
            type=RestartType(restart.type),
            max_restarts=restart.max_restarts,
            window_s=restart.window_s,
            backoff_initial_s=restart.backoff_initial_s,
            backoff_max_s=restart.backoff_max_s,
        ),
        stop_grace_s=cfg.daemon.drain_grace_s,
        ready=heartbeats.wait_ready,
        ready_timeout_s=cfg.agents.ready_timeout_s,
        # a run may hold the replica's loop as long as it may run (agentd.worker._beat_thread)
        liveness=heartbeats.liveness(agent.spec.run_timeout_s),
        liveness_interval_s=cfg.agents.heartbeat_s / 2,
        liveness_timeout_s=cfg.agents.heartbeat_s,
        liveness_failures=1,
        log_path=cfg.daemon.state_dir / "logs" / f"{replica}.log",
        stdin_data=json.dumps(secrets).encode(),
    )
