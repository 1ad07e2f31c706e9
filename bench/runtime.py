"""The agent runtime, measured against raw JetStream in the same run.

- routed hop: a message through router -> JetStream inbox -> echo replica (graph run) -> reply,
  against raw JetStream publish-then-consume(+ack) on the same nats-server;
- routed throughput with 64 messages in flight, against raw JetStream with 64 in flight;
- replica spawn-to-ready (scale 1 -> 2), kill-to-ready after SIGKILL, idle memory per replica;
- runs one replica sustains: no-op runs per second, and runs in flight at once with a graph
  that waits one second.

Identity is on by default: every connection here uses the daemon's own credentials (raw and
routed alike, so both pay the same server-side permission checks).

Run: .venv/bin/python bench/runtime.py [--smoke]   (prints JSON; --smoke: small counts, for the
test that keeps the bench running, tests/test_runtime_bench.py: its figures mean nothing)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import nats  # noqa: E402
from _common import percentiles, rss_mb  # noqa: E402
from baseline import jetstream_hop  # noqa: E402

from agentd.bus import Credentials  # noqa: E402
from agentd.cli._client import ControlClient  # noqa: E402
from tests.harness import REPO, DaemonProcess, nats_options, write_config  # noqa: E402

NOOP_GRAPH = """
import argparse
import asyncio
from langgraph.graph import END, START, StateGraph

async def run(state):
    if state.get("wait_s"):
        await asyncio.sleep(state["wait_s"])
    return state

builder = StateGraph(dict)
builder.add_node("run", run)
builder.add_edge(START, "run")
builder.add_edge("run", END)
graph = builder.compile()
"""

NOOP_SPEC = """
name = "noop"
graph = "noop_graph:graph"
concurrency = 512
checkpoint = false
autoscale = false
"""


def agents_dir(root: Path) -> Path:
    agents = root / "agents"
    (agents / "noop").mkdir(parents=True)
    (agents / "noop" / "agent.toml").write_text(NOOP_SPEC)
    (agents / "noop" / "noop_graph.py").write_text(NOOP_GRAPH)
    (agents / "echo").symlink_to(REPO / "agents" / "echo")
    return agents


async def routed_hops(
    url: str, n: int = 1000, warmup: int = 100
) -> tuple[list[float], list[float]]:
    """Agent `bench` -> echo through the router, one at a time: the delivery hop (sent until the
    echo replica holds the message) and the round trip (until its run's reply arrives)."""
    nc = await nats.connect(url, **nats_options(url))
    inbox = "agentd.reply.bench.hop"
    sub = await nc.subscribe(inbox)
    delivery, round_trip = [], []
    for i in range(n + warmup):
        sent_at = time.time()
        body: dict[str, Any] = {
            "payload": {"i": i},
            "reply_to": inbox,
            "conversation_id": f"c{i % 16}",
        }
        body["sent_at"] = sent_at
        t0 = time.perf_counter()
        ack = await nc.request("agentd.out.bench.echo", json.dumps(body).encode(), timeout=5)
        assert json.loads(ack.data)["ok"], ack.data
        reply = json.loads((await sub.next_msg(timeout=10)).data)
        if i >= warmup:
            round_trip.append(time.perf_counter() - t0)
            delivery.append(reply["received_at"] - sent_at)
    await nc.close()
    return delivery, round_trip


async def raw_publish_rate(url: str, n: int = 5000, in_flight: int = 64) -> float:
    """Raw JetStream publishes acked per second with `in_flight` outstanding."""
    nc = await nats.connect(url, **nats_options(url))
    js = nc.jetstream()
    await js.add_stream(name="BENCHPUB", subjects=["benchpub.>"])
    sem = asyncio.Semaphore(in_flight)

    async def publish(i: int) -> None:
        async with sem:
            await js.publish("benchpub.a", b"x" * 256, headers={"Nats-Msg-Id": f"p{i}"})

    t0 = time.perf_counter()
    await asyncio.gather(*(publish(i) for i in range(n)))
    rate = n / (time.perf_counter() - t0)
    await js.delete_stream("BENCHPUB")
    await nc.close()
    return rate


async def routed_publish_rate(url: str, agent: str, n: int = 5000, in_flight: int = 64) -> float:
    """Messages the router checks, records and stores in an inbox per second."""
    nc = await nats.connect(url, **nats_options(url))
    sem = asyncio.Semaphore(in_flight)

    async def send(i: int) -> None:
        async with sem:
            body = {"payload": {"i": i}, "conversation_id": f"c{i}"}
            ack = await nc.request(
                f"agentd.out.bench.{agent}", json.dumps(body).encode(), timeout=30
            )
            assert json.loads(ack.data)["ok"]

    t0 = time.perf_counter()
    await asyncio.gather(*(send(i) for i in range(n)))
    rate = n / (time.perf_counter() - t0)
    await nc.close()
    return rate


async def routed_throughput(
    url: str, agent: str, n: int, in_flight: int = 64, **extra: Any
) -> float:
    nc = await nats.connect(url, **nats_options(url))
    inbox = f"agentd.reply.bench.{agent}"
    done = asyncio.Event()
    got = 0

    async def on_reply(msg: Any) -> None:
        nonlocal got
        got += 1
        if got == n:
            done.set()

    await nc.subscribe(inbox, cb=on_reply)
    sem = asyncio.Semaphore(in_flight)

    async def send(i: int) -> None:
        async with sem:
            body = {"payload": {"i": i, **extra}, "reply_to": inbox, "conversation_id": f"c{i}"}
            await nc.request(f"agentd.out.bench.{agent}", json.dumps(body).encode(), timeout=30)

    t0 = time.perf_counter()
    await asyncio.gather(*(send(i) for i in range(n)))
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - t0
    await nc.close()
    return n / elapsed


def control(daemon: DaemonProcess) -> ControlClient:
    """agentctl's client as the daemon's default admin."""
    admin = Credentials.load(daemon.admin_creds) if daemon.admin_creds.exists() else None
    return ControlClient(daemon.url, timeout_s=30, credentials=admin)


async def lifecycle(daemon: DaemonProcess) -> dict[str, float]:
    """Spawn-to-ready and kill-to-ready from the supervisor's own events (agentd.evt.*)."""
    events: list[tuple[str, dict[str, Any]]] = []
    arrived = asyncio.Event()
    async with control(daemon) as ctl:

        async def on_event(msg: Any) -> None:
            events.append((msg.subject.rsplit(".", 1)[-1], json.loads(msg.data)))
            arrived.set()

        await ctl.nc.subscribe("agentd.evt.*", cb=on_event)

        async def ready_of(child: str) -> dict[str, Any]:
            while True:
                for kind, body in events:
                    if kind == "ready" and body.get("child") == child:
                        return body
                arrived.clear()
                await asyncio.wait_for(arrived.wait(), 30)

        t0 = time.time()
        await ctl.call("scale", {"agent": "echo", "replicas": 2})
        ready = await ready_of("echo-1")
        spawn = next(b for k, b in events if k == "spawn" and b.get("child") == "echo-1")
        spawn_to_ready = ready["ts"] - spawn["ts"]
        events.clear()
        pid = next(
            r["pid"]
            for a in await ctl.call("ps")
            if a["agent"] == "echo"
            for r in a["replicas"]
            if r["name"] == "echo-1"
        )
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        ready = await ready_of("echo-1")
        kill_to_ready = ready["ts"] - killed_at
        rss = rss_mb(
            next(
                r["pid"]
                for a in await ctl.call("ps")
                if a["agent"] == "echo"
                for r in a["replicas"]
                if r["name"] == "echo-0"
            )
        )
        await ctl.call("scale", {"agent": "echo", "replicas": 1})
        del t0
    return {
        "spawn_to_ready_s": round(spawn_to_ready, 3),
        "kill_to_ready_s": round(kill_to_ready, 3),
        "idle_rss_mb_per_replica": rss,
    }


async def drain_rate(ctl: ControlClient, agent: str, n: int) -> float:
    """Start a stopped agent with `n` messages waiting; its runs finished per second."""
    t0 = time.perf_counter()
    await ctl.call("start", {"agent": agent})
    while True:
        rows = {a["agent"]: a for a in await ctl.call("ps")}
        backlog = rows[agent]["backlog"]
        if backlog["pending"] + backlog["unacked"] == 0:
            return n / (time.perf_counter() - t0)
        await asyncio.sleep(0.05)


async def measure(url: str, daemon: DaemonProcess, smoke: bool = False) -> dict[str, Any]:
    k = 50 if smoke else 1  # --smoke: every count divided by 50
    raw = await jetstream_hop(url, n=1000 // k, bulk=5000 // k, options=nats_options(url))
    raw_publish = await raw_publish_rate(url, n=5000 // k)
    delivery_s, round_trip_s = await routed_hops(url, n=1000 // k, warmup=100 // k)
    delivery, round_trip = percentiles(delivery_s), percentiles(round_trip_s)
    async with control(daemon) as ctl:
        await ctl.call("stop", {"agent": "noop"})
        routed_publish = await routed_publish_rate(url, "noop", n=5000 // k)
        noop_runs = await drain_rate(ctl, "noop", 5000 // k)
    echo_rate = await routed_throughput(url, "echo", 2000 // k)
    life = await lifecycle(daemon)
    waiting = 400 // k
    t0 = time.perf_counter()
    await routed_throughput(url, "noop", waiting, in_flight=waiting, wait_s=1.0)
    concurrent = waiting / (time.perf_counter() - t0)  # runs of 1 s each finished per second
    return {
        "raw_jetstream_hop": raw,
        "raw_jetstream_publish_per_s_64_in_flight": round(raw_publish),
        "routed_delivery_hop": delivery,
        "routed_round_trip_with_echo_run": round_trip,
        "routed_publish_per_s_64_in_flight": round(routed_publish),
        "echo_round_trips_per_s_64_in_flight": round(echo_rate),
        "ratio_delivery_hop_p50": round(delivery["p50_us"] / raw["p50_us"], 2),
        "ratio_delivery_hop_p99": round(delivery["p99_us"] / raw["p99_us"], 2),
        "ratio_round_trip_p50": round(round_trip["p50_us"] / raw["p50_us"], 2),
        "ratio_routed_publish_throughput": round(routed_publish / raw_publish, 2),
        "ratio_echo_throughput_vs_raw_publish_consume": round(echo_rate / raw["msgs_per_s"], 2),
        **life,
        "one_replica_noop_runs_per_s": round(noop_runs),
        "one_replica_runs_in_flight_1s_graph": round(concurrent, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="small counts (figures mean nothing)")
    smoke = parser.parse_args().smoke
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = write_config(
            root, agents_dir=agents_dir(root), extra="[autoscale]\nenabled = false\n"
        )
        daemon = DaemonProcess(config)
        try:
            daemon.wait_ready()
            result = asyncio.run(measure(daemon.url, daemon, smoke))
            assert daemon.stop() == 0
        finally:
            daemon.close()
    aims = {
        "delivery_hop_p50_at_most_1_5x_raw": result["ratio_delivery_hop_p50"] <= 1.5,
        "routed_throughput_at_least_half_raw": result["ratio_routed_publish_throughput"] >= 0.5,
        "kill_to_ready_under_1_5_s": result["kill_to_ready_s"] < 1.5,
        "idle_memory_under_120_mb": result["idle_rss_mb_per_replica"] < 120,
    }
    print(json.dumps({"benchmark": "runtime", "smoke": smoke, **result, "aims": aims}, indent=2))


if __name__ == "__main__":
    main()
