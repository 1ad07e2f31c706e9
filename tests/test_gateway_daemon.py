"""The LLM gateway inside the running daemon: each replica gets the gateway's URL and its own
token, calls are recorded in the daemon's decision log, and the token dies with the replica."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.harness import TEST_AGENTS, DaemonProcess, decision_records, running_daemon, write_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    directory = tmp_path_factory.mktemp("gateway")
    agents = directory / "agents"
    agents.mkdir()
    (agents / "llmcaller").symlink_to(TEST_AGENTS / "llmcaller")
    config = write_config(directory, agents_dir=agents, extra="[autoscale]\nenabled = false\n")
    with running_daemon(config) as d:
        yield d
        assert d.stop() == 0


def test_replica_reaches_the_gateway_with_its_token(daemon: DaemonProcess) -> None:
    out = daemon.agentctl("send", "llmcaller", "{}", "--wait", timeout_s=60)
    assert out.returncode == 0, f"{out.stderr}\n{daemon.log()}"
    seen: dict[str, Any] = json.loads(out.stdout)
    assert seen["url"].startswith("http://127.0.0.1:") and seen["url"].endswith("/v1")
    assert seen["openai_matches"] is True
    assert seen["models"] == [200, {"object": "list", "data": []}]
    # no pool is configured yet: the model is unknown, OpenAI-style
    status, body = seen["chat"]
    assert status == 404 and body["error"]["code"] == "model_not_found"
    records = [r for r in decision_records(daemon.dir / "state", "llm.call")]
    assert records, daemon.log()
    assert records[-1]["agent"] == "llmcaller" and records[-1]["replica"] == "llmcaller-0"
    assert records[-1]["decision"] == "model_not_found"

    # the token is the replica's: once it stops, the gateway no longer knows it
    headers = {"Authorization": f"Bearer {seen['token']}"}
    assert httpx.get(f"{seen['url']}/models", headers=headers).status_code == 200
    stopped = daemon.agentctl("scale", "llmcaller", "0")
    assert stopped.returncode == 0, stopped.stderr
    assert httpx.get(f"{seen['url']}/models", headers=headers).status_code == 401
