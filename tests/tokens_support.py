"""A daemon for the outside-token tests (tests/test_tokens_daemon.py,
tests/security/test_outside_tokens.py): identity on, the example policy enforced (plus
`EXTRA_POLICY`), no agents, and two model pools `main` and `tiny` served by the stand-in vLLM
(no GPU, no weights: it starts at once and answers chats with "x")."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.harness import REPO, DaemonProcess, running_daemon, write_config
from tests.inference.pool_helpers import FAKE_VLLM

__all__ = ["EXTRA_POLICY", "gateway_url", "issue", "served", "tokens_daemon"]

EXTRA_POLICY = """
# tests: outside tokens (agentctl tokens)
p, ext:scorer, model:main, infer, allow
p, ext:narrow, model:main, infer, allow
p, ext:narrow, model:tiny, infer, allow
p, ext:wide, model:main, infer, allow
p, ext:wide, model:tiny, infer, allow
p, alpha, model:tiny, infer, allow
"""


def _pool(name: str) -> str:
    return f"""
[models.{name}]
model = "fake-org/fake-{name}"
launcher = {{ command = {json.dumps([sys.executable, str(FAKE_VLLM)])} }}
device = "cpu"
autoscale = {{ enabled = false }}
"""


@contextmanager
def tokens_daemon(root: Path) -> Iterator[DaemonProcess]:
    """The daemon (its policies under `root/policies`, which a test may edit and reload)."""
    policies = root / "policies"
    shutil.copytree(REPO / "policies", policies)
    with (policies / "policy.csv").open("a") as f:
        f.write(EXTRA_POLICY)
    config = write_config(
        root,
        enabled=[],
        policy="enforce",
        extra="[autoscale]\nenabled = false\n" + _pool("main") + _pool("tiny"),
    )
    text = config.read_text().replace(f'dir = "{REPO / "policies"}"', f'dir = "{policies}"')
    config.write_text(text)
    with running_daemon(config) as daemon:
        yield daemon
        assert daemon.stop() == 0, daemon.log()


def gateway_url(daemon: DaemonProcess) -> str:
    """The OpenAI base URL of the daemon's gateway (`http://127.0.0.1:PORT/v1`)."""
    out = daemon.agentctl("--json", "status")
    assert out.returncode == 0, out.stderr
    url = json.loads(out.stdout)["llm_url"]
    assert isinstance(url, str) and url.endswith("/v1"), out.stdout
    return url


def issue(daemon: DaemonProcess, name: str, *pools: str, ttl: str = "30d") -> dict[str, Any]:
    """`agentctl tokens issue NAME --pool ... --ttl TTL --json` as the default admin."""
    flags = [arg for pool in pools for arg in ("--pool", pool)]
    out = daemon.agentctl("tokens", "issue", name, *flags, "--ttl", ttl, "--json")
    assert out.returncode == 0, f"{out.stderr}\n{daemon.log()[-3000:]}"
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def served(url: str, token: str, model: str) -> httpx.Response:
    """The first answer to a one-token chat on `model` that is not 503 (the pool's replica may
    still be starting)."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + 60
    while True:
        answer = httpx.post(f"{url}/chat/completions", json=body, headers=headers, timeout=10)
        if answer.status_code != 503 or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)
