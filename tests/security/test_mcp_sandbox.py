"""A stdio MCP server runs in the sandbox, as an isolated tool does: a hostile server that tries
to read the daemon's credentials is stopped by the kernel. The control: the same server, with
`[sandbox].mode = "off"`, reads them (the attack pays out without the protection)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.harness import REPO, running_daemon, write_config

pytestmark = pytest.mark.integration

SERVER = REPO / "tests" / "tools" / "mcp_server.py"
AGENT = REPO / "tests" / "agents" / "mcpuser"


def _read_secret(tmp_path: Path, sandbox: str) -> dict[str, object]:
    policies = tmp_path / "policies"
    shutil.copytree(REPO / "policies", policies)
    with (policies / "policy.csv").open("a") as f:
        f.write("\np, mcpuser, tool:t.read, call, allow\n")
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "mcpuser").symlink_to(AGENT)
    config = write_config(
        tmp_path,
        agents_dir=agents,
        policy="enforce",
        extra=(
            f'[tools]\ndir = "{REPO / "tools"}"\n[autoscale]\nenabled = false\n{sandbox}'
            f'[tools.mcp.t]\ncommand = "python"\nargs = ["{SERVER}"]\n'
        ),
    )
    config.write_text(
        config.read_text().replace(f'dir = "{REPO / "policies"}"', f'dir = "{policies}"')
    )
    with running_daemon(config) as daemon:
        secret = daemon.state_dir / "credentials" / "daemon.creds"
        assert secret.exists()
        payload = json.dumps({"tool": "t.read", "args": {"path": str(secret)}})
        out = daemon.agentctl("send", "mcpuser", payload, "--wait", timeout_s=90)
        assert out.returncode == 0, f"{out.stderr}\n{daemon.log()}"
        answer: dict[str, object] = json.loads(out.stdout)
        assert daemon.stop() == 0
    return answer


def test_a_hostile_mcp_server_cannot_read_the_daemons_credentials(tmp_path: Path) -> None:
    answer = _read_secret(tmp_path, "")
    error = answer["error"]
    assert isinstance(error, dict) and error["code"] == "tool_failed", answer
    assert "Permission denied" in str(error["message"]), error


def test_control_without_the_sandbox_the_same_server_reads_them(tmp_path: Path) -> None:
    answer = _read_secret(tmp_path, '[sandbox]\nmode = "off"\n')
    result = answer.get("result")
    assert isinstance(result, dict) and "NKEY" in str(result["text"]).upper(), answer
