"""The whole path through real daemons: [checkpoints] backend postgres in agentd.toml, the DSN
from the named environment variable, the fleet's replica environment, the worker's store. One
daemon ("host A") starts a conversation; it stops; a daemon with another state directory
("host B") continues it."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.checkpoints.postgres_server import PASSWORD, PostgresServer
from tests.harness import TEST_AGENTS, running_daemon, send_and_collect, write_config

pytestmark = pytest.mark.integration


def host_config(directory: Path) -> Path:
    agents = directory / "agents"
    agents.mkdir(parents=True)
    (agents / "tally").symlink_to(TEST_AGENTS / "tally")
    extra = '[checkpoints]\nbackend = "postgres"\ndsn_env = "TEST_PG_DSN"\nconnect_timeout_s = 5\n'
    return write_config(
        directory, agents_dir=agents, extra=extra + "[autoscale]\nenabled = false\n"
    )


def tally(url: str, conversation: str, items: list[str]) -> dict[str, object]:
    results = anyio.run(
        lambda: send_and_collect(url, "tally", [{"items": items}], conversations=[conversation])
    )
    [result] = results.values()
    assert result["ok"], result
    output: dict[str, object] = result["output"]
    return output


def test_a_conversation_survives_moving_to_another_daemon(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    env = {"TEST_PG_DSN": postgres.dsn()}
    with running_daemon(host_config(tmp_path / "a"), env={**env, "TALLY_HOST": "a"}) as daemon:
        assert tally(daemon.url, "loan-42", ["applied"]) == {"items": ["applied"], "hosts": ["a"]}
        assert daemon.stop() == 0
    with running_daemon(host_config(tmp_path / "b"), env={**env, "TALLY_HOST": "b"}) as daemon:
        assert tally(daemon.url, "loan-42", ["approved"]) == {
            "items": ["applied", "approved"],
            "hosts": ["a", "b"],
        }
        assert daemon.stop() == 0
        logs = [daemon.log(), *(p.read_text() for p in daemon.state_dir.glob("logs/*.log"))]
        assert all(PASSWORD not in text for text in logs)  # debug logs included
    assert not any(tmp_path.glob("*/state/checkpoints"))  # no SQLite on either host
