"""Two agentd hosts on a three-node NATS cluster (JetStream R3), each in its own network
namespace where the machine allows it.

The scenario an operator lives through: agents spread over both hosts; one host is SIGKILLed and
its agents run on the other within the bound, with no inbox message lost; a NATS node stops and
service goes on; the dead host comes back and no replica ever runs twice.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest

from agentd.bus import new_id
from agentd.cli._client import ControlClient
from tests.cluster.support import Hosts, NatsCluster, hosts, nats_cluster
from tests.harness import REPO, TEST_AGENTS, DaemonProcess, decision_records, descendants

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]

LEASE_TTL_S = 3.0  # short, to keep the test fast (the default is 6 s)
ACK_WAIT_S = 5.0
# the bound; ours is lease TTL + a placer tick + a worker start (about 3 s here)
FAILOVER_BOUND_S = 30.0
AGENTS = {"echo": 2, "slow": 2}


def agents_dir(directory: Path) -> Path:
    """echo (the example) and slow (100 ms a run), two replicas each."""
    for name, source in (("echo", REPO / "agents" / "echo"), ("slow", TEST_AGENTS / "slow")):
        target = directory / name
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        spec = (target / "agent.toml").read_text()
        (target / "agent.toml").write_text(spec.replace("initial = 1", f"initial = {AGENTS[name]}"))
    return directory


def cluster_config(directory: Path, node: str, url: str, agents: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "agentd.toml"
    path.write_text(
        f"""
[daemon]
state_dir = "{directory / "state"}"
drain_grace_s = 5.0
log_level = "debug"

[bus]
url = "{url}"

[identity]
enabled = false

[policy]
mode = "off"
dir = "{REPO / "policies"}"

[metrics]
port = 0

[inbox]
ack_wait_s = {ACK_WAIT_S}

[agents]
dir = "{agents}"
heartbeat_s = 1.0

[autoscale]
enabled = false

[cluster]
enabled = true
node = "{node}"
lease_ttl_s = {LEASE_TTL_S}
stream_replicas = 3
labels = {{ zone = "{node}" }}
"""
    )
    return path


@dataclass
class Site:
    hosts: Hosts
    nats: NatsCluster
    agents: Path
    root: Path

    def daemon(self, index: int, node: str) -> DaemonProcess:
        config = cluster_config(self.root / node, node, self.nats.url, self.agents)
        daemon = DaemonProcess(config, prefix=self.hosts.prefix(index))
        daemon.wait_ready(90)
        return daemon


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with hosts(2) as made, nats_cluster(tmp_path / "nats", made.server_ip) as cluster:
        print(f"hosts in network namespaces: {made.isolated}")
        yield Site(made, cluster, agents_dir(tmp_path / "agents"), tmp_path)


def workers(daemon: DaemonProcess) -> dict[str, int]:
    """The agent replicas really running under a daemon: replica name -> pid (from /proc)."""
    found = {}
    for pid in descendants(daemon.pid):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in env:
            if item.startswith(b"AGENTD_REPLICA="):
                found[item.split(b"=", 1)[1].decode()] = pid
    return found


def counts(replicas: dict[str, int]) -> dict[str, int]:
    """Replicas per agent."""
    found: dict[str, int] = {}
    for name in replicas:
        agent = name.rsplit("-", 1)[0]
        found[agent] = found.get(agent, 0) + 1
    return found


def no_name_twice(*daemons: DaemonProcess) -> bool:
    seen: list[str] = [name for d in daemons for name in workers(d)]
    assert len(seen) == len(set(seen)), f"a replica runs twice: {sorted(seen)}"
    return True


def wait_for(what: str, check: Any, timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if check():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s}s: {what}")


class Sender:
    """Sends messages through the control plane with reply subjects; collects the replies."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.batch = new_id()[:8]
        self.sent: set[str] = set()
        self.replies: dict[str, dict[str, Any]] = {}
        self._arrived = anyio.Event()

    async def send(self, agent: str, count: int) -> None:
        async with ControlClient(self.url, timeout_s=30) as ctl:
            for _ in range(count):
                mid = f"{self.batch}-{len(self.sent)}"
                await ctl.call(
                    "send",
                    {
                        "to": agent,
                        "payload": {"n": mid},
                        "reply_to": f"agentd.reply.ctl.t{self.batch}.{mid}",
                        "id": mid,
                    },
                )
                self.sent.add(mid)

    async def collect(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        # a connection that outlives the loss of its NATS node (agentctl's does not retry)
        self.nc = nc = await nats.connect(
            self.url.split(","), allow_reconnect=True, reconnect_time_wait=0.1
        )

        async def on_reply(msg: Any) -> None:
            result = json.loads(msg.data)
            self.replies.setdefault(result["message_id"], result)
            self._arrived.set()

        await nc.subscribe(f"agentd.reply.ctl.t{self.batch}.*", cb=on_reply)
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await nc.close()

    async def connected(self) -> None:
        """Until the collector is connected again (after its NATS node stopped)."""
        deadline = time.monotonic() + 30
        while True:  # until a round trip to the server works (it may not know it lost it yet)
            try:
                await self.nc.flush(timeout=1)
                return
            except nats.errors.Error:
                if time.monotonic() > deadline:
                    raise
                await anyio.sleep(0.2)

    async def wait_all(self, timeout_s: float) -> None:
        with anyio.fail_after(timeout_s):
            while not self.sent <= set(self.replies):
                self._arrived = anyio.Event()
                await self._arrived.wait()


def nodes_view(daemon: DaemonProcess) -> dict[str, Any]:
    out = daemon.agentctl("--json", "nodes")
    assert out.returncode == 0, out.stderr
    view: dict[str, Any] = json.loads(out.stdout)
    return view


async def test_failover_nats_node_loss_and_return_without_running_twice(site: Site) -> None:
    a = site.daemon(0, "a")
    b = site.daemon(1, "b")
    try:
        # 1. placed across both hosts, one replica of each agent on each
        one_each = {"echo": 1, "slow": 1}
        wait_for(
            "every replica runs, spread over a and b",
            lambda: no_name_twice(a, b) and counts(workers(a)) == counts(workers(b)) == one_each,
            60,
        )
        on_a, on_b = set(workers(a)), set(workers(b))
        view = nodes_view(a)
        assert {n["node"] for n in view["nodes"]} == {"a", "b"}
        assert view["placer"]["node"] in {"a", "b"}
        assert {n["node"]: set(n["placed"]) for n in view["nodes"]}["b"] == on_b, view
        table = a.agentctl("nodes")
        assert table.returncode == 0 and "placer:" in table.stdout and "zone" not in table.stderr

        sender = Sender(site.nats.url)
        async with anyio.create_task_group() as tg:
            await tg.start(sender.collect)
            # 2. a backlog in the inboxes, then b dies with runs in flight
            await sender.send("slow", 120)
            await sender.send("echo", 40)
            await anyio.sleep(0.5)
            os.killpg(b.pid, signal.SIGKILL)
            b.proc.wait(10)
            killed = time.monotonic()
            # messages sent while b is dead go to the inboxes too
            await sender.send("slow", 20)
            moved_after = await anyio.to_thread.run_sync(
                lambda: wait_for(
                    "b's replicas run on a",
                    lambda: set(workers(a)) == on_a | on_b,
                    FAILOVER_BOUND_S,
                )
            )
            print(f"failover: b's replicas {sorted(on_b)} ran on a {moved_after:.1f}s after")
            await sender.wait_all(60)
            served_after = time.monotonic() - killed
            print(f"every message answered {served_after:.1f}s after the kill")
            assert len(sender.replies) == len(sender.sent) == 180
            assert all(r["ok"] for r in sender.replies.values())
            # the moved replicas serve: some of the late messages were theirs
            assert on_b & {r["replica"] for r in sender.replies.values()}

            # 3. a NATS node stops: the R3 streams keep serving
            site.nats.nodes[0].stop()
            await sender.connected()
            await sender.send("echo", 20)
            await sender.send("slow", 20)
            await sender.wait_all(60)
            assert len(sender.replies) == 220
            tg.cancel_scope.cancel()

        placed = decision_records(a.state_dir, "cluster.placed")
        assert any("from lost hosts" in (r.get("reason") or "") for r in placed), placed
        lost = decision_records(a.state_dir, "cluster.node_lost")
        assert [r["inputs"]["node"] for r in lost] == ["b"]

        # 4. b comes back, a new incarnation: it gets its share again (a drains one replica of
        # each agent, b starts one under a fresh name) and no replica ever runs on both
        b.close()
        b = site.daemon(1, "b")
        wait_for(
            "b runs its share again",
            lambda: no_name_twice(a, b) and counts(workers(a)) == counts(workers(b)) == one_each,
            60,
        )
        assert not set(workers(b)) & on_b  # fresh names, not the dead incarnation's
        # the desired count is cluster-wide: a third echo runs on one of them
        scaled = a.agentctl("scale", "echo", "3")
        assert scaled.returncode == 0, scaled.stderr
        wait_for(
            "three echoes in all",
            lambda: (
                no_name_twice(a, b)
                and counts(workers(a)).get("echo", 0) + counts(workers(b)).get("echo", 0) == 3
            ),
            30,
        )
    finally:
        for daemon in (a, b):
            if daemon.proc.poll() is None:
                daemon.stop(timeout_s=30)
            daemon.close()
