"""Token budgets through the real daemon: a limits.toml model limit is enforced by its gateway
(429 with Retry-After and the rule), `agentctl policy reload` changes it (a call above the new
burst is a 400 naming the new line, never worth a retry), and a daemon restart keeps what was
spent (the bucket is in the daemon's JetStream KV store, not in its memory)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentd.api import call_api
from agentd.bus import Credentials
from tests.harness import REPO, DaemonProcess, running_daemon, write_config
from tests.inference.pool_helpers import FAKE_VLLM
from tests.security.support import connected
from tests.security.test_gateway_tokens import gateway_url, served
from tests.security.test_revocation import register

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

POLICY = """
# tests/gateway/test_budgets_daemon.py
p, ext:spender, api:register, register, allow
p, ext:spender, model:fake, infer, allow
"""
# 1,000 tokens refilled at one a minute: nothing refills while the test runs
LIMIT = '\n[[limit]]\nagent = "ext:spender"\nmodel = "fake"\nper_minute = 1\nburst = 1000\n'
FAKE_POOL = f"""
[autoscale]
enabled = false
[identity]
lease_s = 300
[models.fake]
model = "fake-org/fake-model"
launcher = {{ command = {json.dumps([sys.executable, str(FAKE_VLLM)])} }}
device = "cpu"
autoscale = {{ enabled = false }}
"""


def daemon_config(root: Path) -> tuple[Path, Path]:
    policies = root / "policies"
    shutil.copytree(REPO / "policies", policies)
    with (policies / "policy.csv").open("a") as f:
        f.write(POLICY)
    with (policies / "limits.toml").open("a") as f:
        f.write(LIMIT)
    agents = root / "agents"
    agents.mkdir()
    config = write_config(root, agents_dir=agents, policy="enforce", extra=FAKE_POOL)
    text = config.read_text().replace(f'dir = "{REPO / "policies"}"', f'dir = "{policies}"')
    config.write_text(text)
    return config, policies / "limits.toml"


CREDS: list[Credentials] = []


async def call(daemon: DaemonProcess, max_tokens: int) -> httpx.Response:
    """One completion of `max_tokens` (the fake pool generates all of them) as spender: its
    registration (kept by the daemon across a restart) and a token from its heartbeat."""
    if not CREDS:
        CREDS.append((await register(daemon, "spender"))[0])
    async with connected(daemon, CREDS[0]) as agent:
        token = (await call_api(agent.nc, "heartbeat", "spender"))["llm_token"]
    url = await gateway_url(daemon)
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await served(client, url, token)).status_code == 200  # 1 token + the prompt
        return await client.post(
            f"{url}/completions",
            json={"model": "fake", "prompt": "a", "max_tokens": max_tokens},
            headers={"Authorization": f"Bearer {token}"},
        )


def error(answer: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = answer.json()["error"]
    return body


async def test_a_limit_is_enforced_reloaded_and_kept_across_a_restart(tmp_path: Path) -> None:
    config, limits = daemon_config(tmp_path)
    line = limits.read_text().count("\n") - LIMIT.count("\n") + 2  # the appended [[limit]]
    with running_daemon(config) as daemon:
        spent = await call(daemon, 600)  # ~2 + 600 of 1,000
        assert spent.status_code == 200, spent.text
        refused = await call(daemon, 500)
        assert refused.status_code == 429, refused.text
        assert error(refused)["code"] == "rate_limited"
        assert f"limits.toml:{line}" in error(refused)["message"]
        assert int(refused.headers["Retry-After"]) > 60
        # a reload lowers the burst under the call: permanent now, a 400 naming the limit
        limits.write_text(limits.read_text().replace("burst = 1000", "burst = 450"))
        reload = daemon.agentctl("policy", "reload")
        assert reload.returncode == 0, reload.stderr
        never = await call(daemon, 500)
        assert never.status_code == 400, never.text
        assert never.headers["x-should-retry"] == "false"
        assert error(never)["code"] == "exceeds_limit" and error(never)["param"] == "max_tokens"
        limits.write_text(limits.read_text().replace("burst = 450", "burst = 1000"))
        assert daemon.agentctl("policy", "reload").returncode == 0
        assert daemon.stop() == 0, daemon.log()
    # the same state directory, a new daemon: what was spent is still spent
    with running_daemon(config) as daemon:
        again = await call(daemon, 500)
        assert again.status_code == 429, again.text
        assert "available" in error(again)["message"]
        small = await call(daemon, 200)  # what is left still pays for a small call
        assert small.status_code == 200, small.text
        assert daemon.stop() == 0, daemon.log()
