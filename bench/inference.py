"""The LLM gateway, measured against direct vLLM in the same run (CPU build, the tiny model).

    PYTHONPATH=$PWD /work/main/.venv/bin/python bench/inference.py [--seconds 8]   (prints JSON)

Two vLLM servers start once (cores 0 and 1, prefix caching on, a KV cache sized so that one
replica holds about half of the affinity phase's prompts). The gateway runs in its own process
(uvloop, the real policy from policies/, a list-collecting recorder), as it runs inside the
daemon; clients run in this process with one pooled aiohttp session.

- overhead: 16 concurrent clients, non-streaming chat, 32 tokens each (ignore_eos), for
  `--seconds` (5) each, direct to replica A and through the gateway, interleaved twice; while it
  runs this process and the gateway are pinned to core 0 and replica A to core 1. Throughput
  ratio (gateway / direct) and added p50. Then one client, 1-token completions: the added p50
  without queueing.
- affinity: agents with long distinct system prompts (~1,800 tokens each) ask short questions,
  streaming, 4 at a time in random order, through the gateway to both replicas: round robin
  vs affinity routing (each phase with its own prompts, a warm-up pass, then measured).
  TTFT p50 ratio (affinity / round robin) and prefix-cache hit rates from vLLM's /metrics.

About 2-3 minutes on an idle machine (the two servers start in parallel, 40-60 s); much
longer when other work shares the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402

from tests.inference.vllm_server import VllmServer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SERVED = "tiny"
KV_CACHE_BYTES = 24 * 2**20  # ~24k tokens of the tiny model per replica
PROMPT_TOKENS = 1800
AGENTS_PER_PHASE = 20  # 20 x 1,800 = 36k tokens: both replicas' caches hold them, one cannot

GATEWAY_PROCESS = """
import asyncio, json, os, sys
import anyio
from agentd.config import GatewayConfig, PolicyConfig
from agentd.daemon._authority import Authority
from agentd.gateway import (AffinityRouter, LLMGateway, ReplicaEndpoint, RoundRobin,
                            StaticUpstreams, TokenBook)

async def main():
    spec = json.loads(sys.argv[1])
    records = []
    tokens = TokenBook()
    authority = Authority(PolicyConfig(mode="enforce", dir=spec["policies"]))
    gateway = LLMGateway(
        GatewayConfig(port=0),
        upstreams=StaticUpstreams(ReplicaEndpoint(**e) for e in spec["endpoints"]),
        tokens=tokens,
        record=lambda kind, **fields: records.append(fields),
        policy=authority.check,
        chooser=RoundRobin() if spec["router"] == "round_robin" else AffinityRouter(1.25),
    )
    async with anyio.create_task_group() as tg:
        await tg.start(gateway.run)
        token = tokens.issue("underwriter", "underwriter-0")
        print(json.dumps({"url": gateway.url, "token": token}), flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)  # until the benchmark closes stdin
        print(json.dumps({"records": len(records)}), flush=True)
        await gateway.shutdown()

anyio.run(main, backend_options={"use_uvloop": True})
"""


class GatewayProcess:
    def __init__(self, endpoints: list[dict[str, Any]], router: str, cores: set[int] | None):
        spec = {"endpoints": endpoints, "router": router, "policies": str(REPO / "policies")}
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", GATEWAY_PROCESS, json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        if cores:
            os.sched_setaffinity(self.process.pid, cores)
        assert self.process.stdout is not None
        ready = json.loads(self.process.stdout.readline())
        self.url, self.token = ready["url"], ready["token"]

    def close(self) -> int:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        records: int = json.loads(self.process.stdout.readline())["records"]
        self.process.wait(timeout=15)
        return records


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body: dict[str, Any],
    clients: int,
    seconds: float,
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    tokens = 0
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal tokens
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            async with session.post(url, json=body, headers=headers) as response:
                answer = await response.json()
                assert response.status == 200, answer
            latencies.append(time.perf_counter() - started)
            tokens += answer["usage"]["completion_tokens"]

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return tokens / (time.perf_counter() - started), latencies


async def overhead(direct: str, gateway: GatewayProcess, seconds: float) -> dict[str, Any]:
    body = {
        "model": SERVED,
        "messages": [{"role": "user", "content": "Write a short story."}],
        "max_tokens": 32,
        "ignore_eos": True,
        "temperature": 0,
    }
    routes = {
        "direct": (f"{direct}/v1/chat/completions", {}),
        "gateway": (
            f"{gateway.url}/chat/completions",
            {"Authorization": f"Bearer {gateway.token}"},
        ),
    }
    throughput: dict[str, list[float]] = {"direct": [], "gateway": []}
    latencies: dict[str, list[float]] = {"direct": [], "gateway": []}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for url, headers in routes.values():  # warm-up: connections, first compiles
            await load(session, url, headers, body, 16, 1.0)
        for _ in range(2):
            for name, (url, headers) in routes.items():
                rate, samples = await load(session, url, headers, body, 16, seconds)
                throughput[name].append(rate)
                latencies[name] += samples
        single: dict[str, list[float]] = {"direct": [], "gateway": []}
        ping = {"model": SERVED, "prompt": "ping", "max_tokens": 1}
        for _ in range(100):
            for name, (url, headers) in routes.items():
                url = url.replace("chat/completions", "completions")
                started = time.perf_counter()
                async with session.post(url, json=ping, headers=headers) as response:
                    await response.read()
                single[name].append(time.perf_counter() - started)
    direct_rate = sum(throughput["direct"]) / 2
    gateway_rate = sum(throughput["gateway"]) / 2
    p50 = {name: quantile(samples, 0.5) for name, samples in latencies.items()}
    one = {name: quantile(samples, 0.5) for name, samples in single.items()}
    return {
        "clients": 16,
        "tokens_per_request": 32,
        "direct_tokens_per_s": round(direct_rate, 1),
        "gateway_tokens_per_s": round(gateway_rate, 1),
        "throughput_ratio": round(gateway_rate / direct_rate, 3),
        "direct_p50_ms": round(p50["direct"] * 1000, 2),
        "gateway_p50_ms": round(p50["gateway"] * 1000, 2),
        "added_p50_ms_16_clients": round((p50["gateway"] - p50["direct"]) * 1000, 2),
        "direct_1token_p50_ms": round(one["direct"] * 1000, 2),
        "gateway_1token_p50_ms": round(one["gateway"] * 1000, 2),
        "added_p50_ms_1_client": round((one["gateway"] - one["direct"]) * 1000, 2),
        "requests": {name: len(samples) for name, samples in latencies.items()},
    }


def system_prompts(tokenizer_path: Path, count: int, offset: int) -> list[str]:
    """`count` distinct prompts of about PROMPT_TOKENS tokens, cut from standard-library
    sources (what the tiny model's tokenizer was trained on: realistic token density)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    sources = sorted(Path(os.__file__).parent.glob("*.py"), key=lambda p: p.name)
    sources = [p for p in sources if p.stat().st_size > 20_000][offset : offset + count]
    prompts = []
    for index, path in enumerate(sources):
        text = f"You are agent {offset + index}. Your handbook follows.\n" + path.read_text()
        ids = tokenizer.encode(text[:30_000]).ids[:PROMPT_TOKENS]
        prompts.append(tokenizer.decode(ids))
    if len(prompts) < count:
        raise RuntimeError(f"only {len(prompts)} standard-library files large enough")
    return prompts


async def ttft_phase(gateway: GatewayProcess, prompts: list[str], rounds: int) -> list[float]:
    headers = {"Authorization": f"Bearer {gateway.token}"}
    url = f"{gateway.url}/chat/completions"

    async def ask(session: aiohttp.ClientSession, prompt: str, question: int) -> float:
        body = {
            "model": "main",
            "messages": [
                {"role": "system", "content": prompt},
                {"role": "user", "content": f"Question {question}: what now?"},
            ],
            "max_tokens": 4,
            "stream": True,
        }
        started = time.perf_counter()
        async with session.post(url, json=body, headers=headers) as response:
            assert response.status == 200, await response.text()
            first = None
            async for _chunk in response.content.iter_any():
                first = first or time.perf_counter()
        assert first is not None
        return first - started

    order = [i for _ in range(rounds) for i in range(len(prompts))]
    random.Random(7).shuffle(order)
    ttfts: list[float] = []
    semaphore = asyncio.Semaphore(4)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for index in range(len(prompts)):  # warm-up: each agent once
            await ask(session, prompts[index], 0)

        async def bounded(index: int, question: int) -> None:
            async with semaphore:
                ttfts.append(await ask(session, prompts[index], question))

        await asyncio.gather(*(bounded(i, q) for q, i in enumerate(order, 1)))
    return ttfts


async def prefix_hits(base_url: str) -> tuple[float, float]:
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/metrics") as r:
        text = await r.text()

    def total(name: str) -> float:
        pattern = rf"^vllm:{name}(?:{{[^}}]*}})? ([0-9.e+]+)$"
        return sum(float(v) for v in re.findall(pattern, text, re.M))

    return total("prefix_cache_hits_total"), total("prefix_cache_queries_total")


async def affinity(servers: list[VllmServer], tokenizer: Path, rounds: int) -> dict[str, Any]:
    endpoints = [
        {
            "pool": "main",
            "replica": f"cpu-{i}",
            "base_url": s.base_url,
            "served_name": SERVED,
            "model": "tiny-random",
            "revision": None,
        }
        for i, s in enumerate(servers)
    ]
    result: dict[str, Any] = {"agents": AGENTS_PER_PHASE, "prompt_tokens": PROMPT_TOKENS}
    for phase, router in enumerate(("round_robin", "affinity")):
        prompts = system_prompts(tokenizer, AGENTS_PER_PHASE, phase * AGENTS_PER_PHASE)
        before = [await prefix_hits(s.base_url) for s in servers]
        gateway = GatewayProcess(endpoints, router, None)
        try:
            ttfts = await ttft_phase(gateway, prompts, rounds)
        finally:
            gateway.close()
        after = [await prefix_hits(s.base_url) for s in servers]
        hits = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
        queries = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
        result[router] = {
            "requests": len(ttfts),
            "ttft_p50_ms": round(quantile(ttfts, 0.5) * 1000, 2),
            "ttft_p90_ms": round(quantile(ttfts, 0.9) * 1000, 2),
            "prefix_cache_hit_rate": round(hits / queries, 3) if queries else None,
        }
    result["ttft_p50_ratio"] = round(
        result["affinity"]["ttft_p50_ms"] / result["round_robin"]["ttft_p50_ms"], 3
    )
    return result


def start_server(model: Path, work: Path, core: str) -> VllmServer:
    (work / core).mkdir()
    return VllmServer.start(
        model,
        work / core,
        served_name=SERVED,
        cpu_threads_bind=core,
        kv_cache_bytes=KV_CACHE_BYTES,
        max_num_seqs=16,
        extra_args=["--enable-prefix-caching"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per load run (4 runs)")
    parser.add_argument("--rounds", type=int, default=4, help="questions per agent, measured")
    args = parser.parse_args()
    from agentd.inference import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="bench-inference-"))
    model = build_tiny_model(work / "model")
    servers: list[VllmServer] = []
    started = time.perf_counter()
    try:
        # both at once: a start is mostly waiting (loading, warm-up), one core each
        with ThreadPoolExecutor(2) as pool:
            starting = [pool.submit(start_server, model, work, core) for core in ("1", "0")]
            for future in starting:
                with contextlib.suppress(Exception):  # the first error is raised below
                    servers.append(future.result())
            for future in starting:
                future.result()
        startup_s = time.perf_counter() - started
        replica_a = {
            "pool": "main",
            "replica": "cpu-1",
            "base_url": servers[0].base_url,
            "served_name": SERVED,
            "model": "tiny-random",
            "revision": None,
        }
        mine = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {0})
        gateway = GatewayProcess([replica_a], "affinity", {0})
        try:
            figures = asyncio.run(overhead(servers[0].base_url, gateway, args.seconds))
        finally:
            figures["records"] = gateway.close()
            os.sched_setaffinity(0, mine)
        routing = asyncio.run(affinity(servers, model / "tokenizer.json", args.rounds))
    finally:
        for server in servers:
            server.stop()
    print(
        json.dumps(
            {
                "benchmark": "inference",
                "vllm_startup_s": round(startup_s, 1),
                "gateway_vs_direct": figures,
                "affinity_vs_round_robin": routing,
                "total_s": round(time.perf_counter() - started, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
