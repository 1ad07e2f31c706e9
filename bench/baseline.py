"""Raw NATS baselines on this machine: core request/reply and JetStream publish-then-consume.

Every other benchmark reports its figures as ratios against these, measured in the same run.
Run: .venv/bin/python bench/baseline.py [--smoke]   (prints JSON)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

sys.path.insert(0, str(Path(__file__).parent))
from _common import nats_server, percentiles, responder  # noqa: E402


async def request_reply(url: str, n: int = 2000, concurrency: int = 16) -> dict[str, Any]:
    """Core NATS request/reply to a responder in another process."""
    nc = await nats.connect(url)
    for _ in range(min(n, 100)):  # warm up
        await nc.request("bench.echo", b"x" * 128, timeout=5)
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        await nc.request("bench.echo", b"x" * 128, timeout=5)
        samples.append(time.perf_counter() - t0)
    t0 = time.perf_counter()

    async def worker(k: int) -> None:
        for _ in range(k):
            await nc.request("bench.echo", b"x" * 128, timeout=5)

    await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
    rate = (n // concurrency * concurrency) / (time.perf_counter() - t0)
    await nc.close()
    return {**percentiles(samples), f"req_per_s_{concurrency}_concurrent": round(rate)}


async def jetstream_hop(
    url: str, n: int = 1000, bulk: int = 5000, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Publish to a stream, then consume it with a durable pull consumer and ack (`options`:
    nats.connect()'s, e.g. credentials)."""
    nc = await nats.connect(url, **(options or {}))
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="BENCH", subjects=["bench.in.>"]))
    await js.add_consumer("BENCH", ConsumerConfig(durable_name="c", ack_policy=AckPolicy.EXPLICIT))
    psub = await js.pull_subscribe_bind("c", stream="BENCH")
    samples = []
    for i in range(n):  # latency: one message at a time, publish (acked) -> fetch -> ack
        t0 = time.perf_counter()
        await js.publish("bench.in.a", b"x" * 128, headers={"Nats-Msg-Id": f"l{i}"})
        (msg,) = await psub.fetch(1, timeout=5)
        await msg.ack()
        samples.append(time.perf_counter() - t0)
    t0 = time.perf_counter()  # throughput: 64 publishes in flight, consumed in batches of 100
    sem = asyncio.Semaphore(64)

    async def publish(i: int) -> None:
        async with sem:
            await js.publish("bench.in.a", b"x" * 128, headers={"Nats-Msg-Id": f"b{i}"})

    async def consume() -> None:
        got = 0
        while got < bulk:
            for msg in await psub.fetch(100, timeout=5):
                await msg.ack()
                got += 1

    await asyncio.gather(consume(), *(publish(i) for i in range(bulk)))
    rate = bulk / (time.perf_counter() - t0)
    await nc.close()
    return {**percentiles(samples), "msgs_per_s": round(rate)}


async def measure(url: str, smoke: bool) -> dict[str, Any]:
    requests, hops, bulk = (64, 20, 200) if smoke else (2000, 1000, 5000)
    with responder(url):
        rr = await request_reply(url, requests)
    hop = await jetstream_hop(url, hops, bulk)
    return {"nats_request_reply": rr, "jetstream_publish_consume": hop}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="a few messages (tests)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, nats_server(Path(tmp)) as url:
        result = asyncio.run(measure(url, args.smoke))
    print(json.dumps({"benchmark": "baseline", **result}, indent=2))


if __name__ == "__main__":
    main()
