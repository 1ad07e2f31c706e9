"""Two hosts on a three-node NATS cluster (JetStream R3), each agentd in its own network
namespace where the machine allows it (tests/cluster/support.py).

1. Failover, 5 rounds: SIGKILL host b; time until its echo replica is serving on host a (the
   moved replica's first heartbeat from its new process: it consumes the inbox from then on).
   Host b is then restarted and gets its share back before the next round.
2. Routed throughput: 2,000 messages published to the router (agentd.out.<sender>.echo) with
   reply subjects under the sender's replies, 4 echo replicas on two hosts against the same 4 on
   one host, in the same run.
   On this 2-core machine both "hosts" share the same two cores: the ratio shows the cost of
   spreading, not the gain of a second machine.

Run: .venv/bin/python bench/cluster.py [--smoke]   (prints JSON; about 2 minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio  # noqa: E402
import nats  # noqa: E402

from agentd.bus import Message, Subjects  # noqa: E402
from tests.cluster.support import hosts, nats_cluster  # noqa: E402
from tests.cluster.test_two_hosts import cluster_config, counts, workers  # noqa: E402
from tests.harness import REPO, DaemonProcess  # noqa: E402

ROUNDS = 5
MESSAGES = 2000
REPLICAS = 4  # echo replicas in the throughput phases
SUBJECTS = Subjects()
SMOKE = (1, 100, 2)  # --smoke (tests): rounds, messages, replicas; every phase runs


def agents_dir(directory: Path, replicas: int) -> Path:
    target = directory / "echo"
    shutil.copytree(REPO / "agents" / "echo", target, ignore=shutil.ignore_patterns("__pycache__"))
    spec = (target / "agent.toml").read_text()
    # max above the count: a host that joins late gets its share under fresh names
    spec = spec.replace("initial = 1", f"initial = {replicas}").replace("max = 4", "max = 8")
    (target / "agent.toml").write_text(spec)
    return directory


def start(root: Path, node: str, url: str, agents: Path, prefix: list[str]) -> DaemonProcess:
    daemon = DaemonProcess(cluster_config(root / node, node, url, agents), prefix=prefix)
    daemon.wait_ready(90)
    return daemon


def wait_until(check: Any, *daemons: DaemonProcess, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            running = [workers(d) for d in daemons]
            raise TimeoutError(f"the cluster did not settle: {running}")
        time.sleep(0.05)


async def kill_and_time(url: str, victim: DaemonProcess, replica: str, old_pid: int) -> float:
    """SIGKILL `victim`; seconds until `replica` heartbeats from another process."""
    nc = await nats.connect(url.split(","))
    arrived = anyio.Event()

    async def on_beat(msg: Any) -> None:
        beat = json.loads(msg.data)
        if beat.get("replica") == replica and beat.get("pid") != old_pid:
            arrived.set()

    await nc.subscribe("agentd.hb.>", cb=on_beat)
    await nc.flush()
    try:
        killed = time.monotonic()
        os.killpg(victim.pid, signal.SIGKILL)
        with anyio.fail_after(60):
            await arrived.wait()
        return time.monotonic() - killed
    finally:
        await nc.close()


def failover_rounds(
    root: Path, url: str, prefixes: list[list[str]], rounds: int = ROUNDS
) -> list[float]:
    agents = agents_dir(root / "agents-failover", 2)
    a = start(root, "a", url, agents, prefixes[0])
    b = start(root, "b", url, agents, prefixes[1])
    samples = []
    try:
        for round_ in range(rounds):
            wait_until(lambda b=b: counts(workers(a)) == counts(workers(b)) == {"echo": 1}, a, b)
            ((replica, pid),) = workers(b).items()
            samples.append(round(anyio.run(kill_and_time, url, b, replica, pid), 2))
            b.close()
            if round_ < rounds - 1:  # b comes back for the next round
                b = start(root, "b", url, agents, prefixes[1])
    finally:
        for d in (a, b):
            d.stop()
            d.close()
    return samples


async def routed_throughput(url: str, messages: int) -> float:
    """Messages per second through router -> inbox -> echo replica -> reply."""
    nc = await nats.connect(url.split(","))
    done = anyio.Event()
    replies = 0

    async def on_reply(msg: Any) -> None:
        nonlocal replies
        replies += 1
        if replies >= messages:
            done.set()

    # a reply goes under the sender's own replies (the router refuses any other reply_to)
    await nc.subscribe(SUBJECTS.reply("bench", "*"), cb=on_reply)
    started = time.monotonic()
    for i in range(messages):
        message = Message.model_validate(
            {
                "from": "bench",
                "to": "echo",
                "payload": {"i": i},
                "reply_to": SUBJECTS.reply("bench", str(i)),
            }
        )
        await nc.publish(SUBJECTS.out("bench", "echo"), message.to_json())
    with anyio.fail_after(120):
        await done.wait()
    elapsed = time.monotonic() - started
    await nc.close()
    return messages / elapsed


def throughput(
    root: Path,
    url: str,
    prefixes: list[list[str]],
    two_hosts: bool,
    messages: int = MESSAGES,
    replicas: int = REPLICAS,
) -> float:
    tag = "two" if two_hosts else "one"
    agents = agents_dir(root / f"agents-{tag}", replicas)
    daemons = [start(root, f"{tag}a", url, agents, prefixes[0])]
    if two_hosts:
        daemons.append(start(root, f"{tag}b", url, agents, prefixes[1]))
    try:
        want = [replicas // 2] * 2 if two_hosts else [replicas]
        wait_until(lambda: [counts(workers(d)).get("echo", 0) for d in daemons] == want, *daemons)
        time.sleep(2)  # every replica past its first heartbeat and pulling
        return anyio.run(routed_throughput, url, messages)
    finally:
        for d in daemons:
            d.stop()
            d.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="one failover, 100 messages (tests)")
    smoke = parser.parse_args().smoke
    rounds, messages, replicas = SMOKE if smoke else (ROUNDS, MESSAGES, REPLICAS)
    with tempfile.TemporaryDirectory(prefix="agentd-bench-cluster-") as tmp:
        root = Path(tmp)
        with hosts(2) as made, nats_cluster(root / "nats", made.server_ip) as cluster:
            prefixes = [made.prefix(0), made.prefix(1)]
            failover = failover_rounds(root, cluster.url, prefixes, rounds)
            one = throughput(root, cluster.url, prefixes, False, messages, replicas)
            two = throughput(root, cluster.url, prefixes, True, messages, replicas)
            print(
                json.dumps(
                    {
                        "network_namespaces": made.isolated,
                        "lease_ttl_s": 3.0,
                        "failover_s": failover,
                        "failover_median_s": statistics.median(failover),
                        "routed_msgs_per_s_one_host": round(one),
                        "routed_msgs_per_s_two_hosts": round(two),
                        "two_over_one": round(two / one, 2),
                        "messages": messages,
                        "echo_replicas": replicas,
                    },
                    indent=2,
                )
            )


if __name__ == "__main__":
    main()
