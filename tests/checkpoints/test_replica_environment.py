"""What the daemon's fleet puts in a replica's environment for [checkpoints] backend postgres:
the connection string for agents that keep checkpoints, a blanked variable for the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentd.config import load_agent, load_config
from agentd.daemon._replica_spec import replica_env as fleet_replica_env
from agentd.worker import CheckpointSettings, WorkerSettings
from tests.harness import REPO, TEST_AGENTS

DSN = "postgresql://agentd:pw-9@db:5432/agentd"


def replica_env(tmp_path: Path, agent_dir: Path) -> dict[str, str]:
    config = tmp_path / "agentd.toml"
    config.write_text('[checkpoints]\nbackend = "postgres"\ndsn_env = "TEST_FLEET_DSN"\n')
    agent = load_agent(agent_dir)
    return fleet_replica_env(
        load_config(config).config,
        agent,
        agent.name,
        f"{agent.name}-0",
        nats_url="nats://127.0.0.1:1",
    )


def test_a_checkpointing_replica_is_told_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_FLEET_DSN", DSN)
    env = replica_env(tmp_path, TEST_AGENTS / "tally")
    assert env["AGENTD_CHECKPOINT_BACKEND"] == "postgres"
    assert env["AGENTD_CHECKPOINT_DSN"] == DSN
    assert WorkerSettings.from_env("tally", env).checkpoints == CheckpointSettings(
        backend="postgres", dsn=DSN
    )


def test_a_stateless_replica_gets_no_connection_string(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_FLEET_DSN", DSN)
    env = replica_env(tmp_path, REPO / "agents" / "echo")  # checkpoint = false
    assert env["AGENTD_CHECKPOINT_BACKEND"] == "sqlite"
    assert "AGENTD_CHECKPOINT_DSN" not in env
    assert env["TEST_FLEET_DSN"] == ""  # blanks what it would inherit from the daemon
    assert DSN not in env.values()
