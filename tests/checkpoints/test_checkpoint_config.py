"""[checkpoints] in agentd.toml, the worker's environment, and `agentd run` without the DSN."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from agentd.config import CheckpointsConfig, load_config
from agentd.errors import ConfigError
from agentd.worker import CheckpointSettings, WorkerSettings
from tests.harness import write_config

# the lead's clustered configuration (issue 8), as an operator would write it with Postgres
CLUSTERED = """
[bus]
url = "nats://nats:4222"          # an external NATS cluster (no embedded server)
[cluster]
enabled = true
node = ""                         # empty: $AGENTD_NODE, else the host name
labels = { gpu = "true" }         # free-form key/values advertised with the node's capacity
lease_ttl_s = 6                   # node lease and placer lease, seconds
stream_replicas = 3               # JetStream replicas of agentd's streams and KV buckets
[checkpoints]
backend = "postgres"
dsn_env = "AGENTD_CHECKPOINT_DSN"
"""


def load(tmp_path: Path, text: str) -> CheckpointsConfig:
    path = tmp_path / "agentd.toml"
    path.write_text(text)
    return load_config(path).config.checkpoints


def test_sqlite_is_the_default(tmp_path: Path) -> None:
    checkpoints = load(tmp_path, "[daemon]\n")
    assert checkpoints.backend == "sqlite" and checkpoints.dsn_env == "AGENTD_CHECKPOINT_DSN"
    assert checkpoints.environment_problems({}) == []  # sqlite needs nothing from the env


def test_the_clustered_example_selects_postgres(tmp_path: Path) -> None:
    """Until [cluster] lands in load_config, the lead's example is read with tomllib and only
    its [checkpoints] table goes through the model."""
    data = tomllib.loads(CLUSTERED)
    checkpoints = CheckpointsConfig.model_validate(data["checkpoints"])
    assert checkpoints.backend == "postgres"
    assert checkpoints.dsn({"AGENTD_CHECKPOINT_DSN": "postgresql://h/db"}) == "postgresql://h/db"
    assert checkpoints.dsn({}) is None
    stripped = (
        CLUSTERED.split("[cluster]")[0] + "[checkpoints]" + CLUSTERED.split("[checkpoints]")[1]
    )
    assert load(tmp_path, stripped).backend == "postgres"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('backend = "mysql"', "checkpoints.backend: Input should be 'sqlite' or 'postgres'"),
        ('dsn_env = "MY DSN"', "checkpoints.dsn_env: Value error, must be an environment"),
        ("pool_max_size = 0", "checkpoints.pool_max_size: Input should be greater than"),
        ("connect_timeout_s = -1", "checkpoints.connect_timeout_s: Input should be greater"),
        ('dns_env = "X"', "checkpoints.dns_env: unknown key"),
        ('dsn = "postgresql://u:pw@h/db"', "a connection string does not belong in agentd.toml"),
    ],
)
def test_a_bad_section_names_its_toml_path(tmp_path: Path, body: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f"[checkpoints]\n{body}\n")
    text = str(caught.value)
    assert str(tmp_path / "agentd.toml") in text and expected in text
    assert "pw@h" not in text  # an inline DSN is refused without being repeated


def test_a_missing_variable_names_the_section_and_the_variable() -> None:
    config = CheckpointsConfig(backend="postgres", dsn_env="PG_URL")
    [problem] = config.environment_problems({"OTHER": "x"})
    assert problem.startswith("checkpoints.dsn_env: the environment variable PG_URL is not set")
    assert config.environment_problems({"PG_URL": "postgresql://h/db"}) == []
    assert config.environment_problems({"PG_URL": ""}) != []  # empty is as good as missing


def test_worker_settings_carry_the_store_and_keep_the_dsn_out_of_reprs(tmp_path: Path) -> None:
    dsn = "postgresql://agentd:pw-123@db:5432/agentd"
    config = CheckpointsConfig(backend="postgres", pool_max_size=3, connect_timeout_s=2.5)
    store = CheckpointSettings.from_config(config, {"AGENTD_CHECKPOINT_DSN": dsn})
    settings = WorkerSettings(
        agent="tally", replica="tally-0", agent_dir=tmp_path, nats_url="nats://x:1",
        checkpoints=store,
    )  # fmt: skip
    env = settings.to_env()
    assert env["AGENTD_CHECKPOINT_BACKEND"] == "postgres" and env["AGENTD_CHECKPOINT_DSN"] == dsn
    assert WorkerSettings.from_env("tally", env).checkpoints == store
    assert "pw-123" not in repr(settings) and "pw-123" not in repr(store)
    plain = WorkerSettings(agent="t", replica="t-0", agent_dir=tmp_path, nats_url="nats://x:1")
    assert plain.to_env()["AGENTD_CHECKPOINT_BACKEND"] == "sqlite"
    assert "AGENTD_CHECKPOINT_DSN" not in plain.to_env()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"AGENTD_CHECKPOINT_BACKEND": "postgres"}, "AGENTD_CHECKPOINT_DSN: not set"),
        ({"AGENTD_CHECKPOINT_BACKEND": "redis"}, "must be sqlite or postgres (got 'redis')"),
        (
            {"AGENTD_CHECKPOINT_BACKEND": "postgres", "AGENTD_CHECKPOINT_DSN": "x",
             "AGENTD_CHECKPOINT_POOL_MAX_SIZE": "many"},
            "AGENTD_CHECKPOINT_POOL_MAX_SIZE: not an integer ('many')",
        ),
    ],
)  # fmt: skip
def test_a_bad_worker_environment_is_a_config_error(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    base = {"AGENTD_AGENT_DIR": str(tmp_path), "AGENTD_NATS_URL": "nats://x:1"}
    with pytest.raises(ConfigError, match="the worker's environment") as caught:
        WorkerSettings.from_env("tally", {**base, **env})
    assert expected in str(caught.value)


def test_agentd_run_without_the_dsn_variable_stops_at_start(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, extra='[checkpoints]\nbackend = "postgres"\ndsn_env = "AGENTD_TEST_PG_DSN"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "AGENTD_TEST_PG_DSN"}
    done = subprocess.run(
        [sys.executable, "-m", "agentd.cli.agentd", "--config", str(config), "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert str(config) in done.stderr
    assert "checkpoints.dsn_env: the environment variable AGENTD_TEST_PG_DSN" in done.stderr
    assert not (tmp_path / "state" / "decisions.db").exists()  # nothing started
