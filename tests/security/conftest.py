"""One real daemon for the adversarial suite: identity on, policy enforced, three agents
(alpha, beta, gamma: echo graphs) and a short lease for registered agents."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import REPO, DaemonProcess, running_daemon, write_config
from tests.inference.pool_helpers import FAKE_VLLM

AGENTS = ("alpha", "beta", "gamma", "delta")
EXTRA_POLICY = """
# tests/security: the attackers' daemon
p, alpha, agent:beta, send, allow
p, ext:outsider, api:register, register, allow
p, ext:raider, api:register, register, allow
p, ext:lapser, api:register, register, allow
p, ext:revokee, api:register, register, allow
p, ext:preauth, api:register, register, allow
p, ext:fuzzed, api:register, register, allow
p, ext:modeler, api:register, register, allow
p, ext:nomodel, api:register, register, allow
p, ext:modeler2, api:register, register, allow
p, ext:modeler, model:fake, infer, allow
p, ext:modeler2, model:fake, infer, allow
p, ext:hog, api:register, register, allow
p, ext:hogfree, api:register, register, allow
p, ext:limited, api:register, register, allow
p, ext:hog, model:fake, infer, allow
p, ext:hogfree, model:fake, infer, allow
p, ext:limited, model:fake, infer, allow
p, ext:resetter, api:register, register, allow
p, ext:resetter, model:fake, infer, allow
# hardening: a name pre-authorized and then claimed through the bootstrap path; reserved names
# that policy would let register; an external agent that fuzzes its own subjects; who may spawn
p, ext:hijacked, api:register, register, allow
p, ext:ctl, api:register, register, allow
p, ext:daemon, api:register, register, allow
p, ext:fuzzext, api:register, register, allow
p, ext:deepbody, api:register, register, allow
p, delta, agent:gamma, spawn, allow
# test_llm_run_claims.py: an agent that names other runs in its LLM calls' baggage
p, ext:claimer, api:register, register, allow
p, ext:claimer, model:fake, infer, allow
# test_registered_subject.py: a registered agent's messages are decided on ext:<name>, as its
# registration, model and tool calls are; a grant to the bare name is a replica's, not its
p, ext:courier, api:register, register, allow
p, ext:courier, agent:beta, send, allow
p, ext:courier2, api:register, register, allow
p, courier2, agent:beta, send, allow
"""
# tests/security/test_llm_budgets.py: limits.toml model limits on the fake pool (the token
# budgets); hog has 2,000 tokens a minute, hogfree, its control, has none; resetter tries to
# reset its own bucket in the daemon's KV store
EXTRA_LIMITS = """
[[limit]]
agent = "ext:limited"
model = "fake"
per_minute = 60
burst = 1000

[[limit]]
agent = "ext:hog"
model = "fake"
per_minute = 2000
burst = 2000

[[limit]]
agent = "ext:resetter"
model = "fake"
per_minute = 1
burst = 1000
"""
LEASE_S = 2.0
# a model pool for the gateway-token cases: a stand-in vLLM (no GPU, no weights, starts at once)
FAKE_POOL = f"""
[models.fake]
model = "fake-org/fake-model"
launcher = {{ command = {json.dumps([sys.executable, str(FAKE_VLLM)])} }}
device = "cpu"
autoscale = {{ enabled = false }}
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_agents(root: Path) -> Path:
    agents = root / "agents"
    for name in AGENTS:
        folder = agents / name
        folder.mkdir(parents=True)
        shutil.copy(REPO / "agents" / "echo" / "graph.py", folder / "graph.py")
        (folder / "agent.toml").write_text(
            f'name = "{name}"\ngraph = "graph:graph"\ncheckpoint = false\nautoscale = false\n'
            "idle_timeout_s = 5\n"  # a spawned instance (test_spawn_policy) ends soon
            "[replicas]\ninitial = 1\nmin = 0\nmax = 2\n"
        )
    return agents


@pytest.fixture(scope="package")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    root = tmp_path_factory.mktemp("security")
    policies = root / "policies"
    shutil.copytree(REPO / "policies", policies)
    with (policies / "policy.csv").open("a") as f:
        f.write(EXTRA_POLICY)
    with (policies / "limits.toml").open("a") as f:
        f.write(EXTRA_LIMITS)
    config = write_config(
        root,
        agents_dir=make_agents(root),
        policy="enforce",
        extra=(
            f"[autoscale]\nenabled = false\n[identity]\nlease_s = {LEASE_S}\nlease_check_s = 0.1\n"
            + FAKE_POOL
        ),
    )
    text = config.read_text().replace(f'dir = "{REPO / "policies"}"', f'dir = "{policies}"')
    config.write_text(text)
    with running_daemon(config) as daemon:
        yield daemon
        assert daemon.stop() == 0, daemon.log()
