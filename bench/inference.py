"""The LLM gateway, measured against direct vLLM in the same run (CPU build, the tiny model).

    PYTHONPATH=$PWD .venv/bin/python bench/inference.py [--smoke]   (prints JSON)

Two vLLM servers start once (cores 0 and 1, prefix caching on, a KV cache sized so that one
replica holds about half of the affinity phase's prompts). The gateway runs in its own process
(uvloop, the real policy from policies/, a list-collecting recorder), as it runs inside the
daemon; clients run in this process with one pooled aiohttp session.

- overhead: 16 concurrent clients, non-streaming chat, 32 tokens each (ignore_eos), in
  `--pairs` (6) pairs of `--seconds` (2.5) runs, direct to replica A and through the gateway,
  the order flipping each pair (with --pin, this process and the gateway on core 0, replica A
  on core 1; by default the kernel places them). Throughput ratio (median of the pairs'
  ratios) and added p50 (median of the pairs' differences). Then one client, 1-token
  completions: the added p50 without queueing, and its throughput ratio (direct p50 / gateway
  p50: one client in sequence makes 1 / latency calls a second).
- isolated: the same against a fixed-latency fake upstream (200 ms, its own process): the
  gateway's own cost without vLLM's CPU work competing for the same cores (on a GPU host
  vLLM's work is on the GPU, so this is the closer figure there).
- affinity: agents with long distinct system prompts (~1,800 tokens each) ask short questions,
  streaming, 4 at a time in random order, through a round-robin gateway and an affinity
  gateway to both replicas, each with its own agents; after a warm-up pass, `--rounds` (6)
  passes alternate between the two. TTFT p50 ratio (affinity / round robin, overall and per
  round) and prefix-cache hit rates from vLLM's /metrics (measured passes only).

The gateway enforces a token budget as the daemon does (a limits.toml entry far above what the
bench spends, its bucket in a JetStream KV bucket on a nats-server of its own; each call reserves
before and settles after): `budget_spent_tokens` shows it was charged. `--no-budgets` runs the
gateway without one (what budgets cost, in the same conditions). `--smoke`: the isolated phase
only, no vLLM, one short pair (tests/gateway/test_inference_bench.py runs it).

Another workload on the same cores moves every figure: the pairs and rounds show how much.

About 2-3 minutes on an idle machine (the two servers start in parallel, 40-60 s); much
longer when other work shares the cores. `--smoke` (the tests): every phase, with one short pair,
one round and 4 agents per router; the two servers' startup is most of its time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
from _common import nats_server  # noqa: E402

from tests.inference.vllm_server import VllmServer, free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SERVED = "tiny"
KV_CACHE_BYTES = 24 * 2**20  # ~24k tokens of the tiny model per replica
PROMPT_TOKENS = 1800
AGENTS_PER_PHASE = 20  # 20 x 1,800 = 36k tokens: both replicas' caches hold them, one cannot

FIXED_LATENCY_UPSTREAM = """
import asyncio, sys
from aiohttp import web

ANSWER = {
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "x" * 128},
                 "finish_reason": "length"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 32, "total_tokens": 44},
}

async def answer(request):
    await request.read()
    await asyncio.sleep(0.2)
    return web.json_response(ANSWER)

app = web.Application()
app.router.add_post("/v1/chat/completions", answer)
app.router.add_post("/v1/completions", answer)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None,
            print=lambda *_: print("ready", flush=True))
"""

GATEWAY_PROCESS = """
import asyncio, json, os, sys
import anyio
from agentd.bus import connect, jetstream
from agentd.config import GatewayConfig, PolicyConfig
from agentd.daemon._authority import Authority
from agentd.gateway import (AffinityRouter, LLMGateway, ReplicaEndpoint, RoundRobin,
                            StaticUpstreams, TokenBook, TokenBudgets, open_budget_store)

async def main():
    spec = json.loads(sys.argv[1])
    records = []
    tokens = TokenBook()
    authority = Authority(PolicyConfig(mode="enforce", dir=spec["policies"]))
    # as the daemon does: limits.toml's model limit, its bucket in a JetStream KV bucket
    nc = await connect(spec["nats"], name="bench-gateway")
    store = await open_budget_store(jetstream(nc), "bench_budgets")
    limits = authority.point.limiter.token_limit
    gateway = LLMGateway(
        GatewayConfig(port=0),
        upstreams=StaticUpstreams(ReplicaEndpoint(**e) for e in spec["endpoints"]),
        tokens=tokens,
        record=lambda kind, **fields: records.append(fields),
        policy=authority.check,
        chooser=RoundRobin() if spec["router"] == "round_robin" else AffinityRouter(1.25),
        budgets=TokenBudgets(limits, store) if spec["budgets"] else None,
    )
    budgets = gateway.budgets
    async with anyio.create_task_group() as tg:
        await tg.start(gateway.run)
        token = tokens.issue("underwriter", "underwriter-0")
        print(json.dumps({"url": gateway.url, "token": token}), flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)  # until the benchmark closes stdin
        left = await budgets.remaining("underwriter", "main") if budgets else None
        print(json.dumps({"records": len(records), "budget_left": left}), flush=True)
        await gateway.shutdown()
    await nc.close()

anyio.run(main, backend_options={"use_uvloop": True})
"""


# every call of the overhead phases pays for its budget (reserve before, settle after, in KV)
# and none is refused: a limit far above what the bench can spend
BENCH_LIMIT = """
[[limit]]
agent = "underwriter"
model = "main"
per_second = 1
burst = 1000000000
"""
BENCH_BURST = 1_000_000_000  # refilled at 1 token/s: what was spent shows at the end


@contextlib.contextmanager
def bench_policies() -> Iterator[tuple[Path, str]]:
    """policies/ with BENCH_LIMIT appended, and a nats-server for the budgets' KV bucket."""
    with tempfile.TemporaryDirectory(prefix="bench-inference-policy-") as tmp:
        policies = Path(tmp) / "policies"
        shutil.copytree(REPO / "policies", policies)
        with (policies / "limits.toml").open("a") as f:
            f.write(BENCH_LIMIT)
        with nats_server(Path(tmp) / "nats") as url:
            yield policies, url


POLICIES: tuple[Path, str] | None = None
BUDGETS = True  # --no-budgets: the gateway without token budgets (what they cost)
SINGLE_CALLS = 100  # 1-token calls, one client, in sequence, per route (--smoke: 5)


class GatewayProcess:
    def __init__(self, endpoints: list[dict[str, Any]], router: str, cores: set[int] | None):
        assert POLICIES is not None, "run inside bench_policies()"
        policies, nats = POLICIES
        spec = {
            "endpoints": endpoints,
            "router": router,
            "policies": str(policies),
            "nats": nats,
            "budgets": BUDGETS,
        }
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
        self.cpu_at_ready = self.cpu_s()  # imports and startup are not the calls' cost
        self.cpu_at_close = 0.0
        self.budget_spent: int | None = None

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the gateway process has used so far.

        The warm-up's calls are counted too, and divided among the records (which include
        them): the figure is per call."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> int:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.cpu_at_close = self.cpu_s() - self.cpu_at_ready
        self.process.stdin.close()
        closing = json.loads(self.process.stdout.readline())
        records: int = closing["records"]
        # what the calls took from the bench's limit (None: --no-budgets)
        left = closing["budget_left"]
        self.budget_spent = None if left is None else round(BENCH_BURST - left)
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


async def overhead(
    direct: str, gateway: GatewayProcess, seconds: float, pairs: int, pings: int = 100
) -> dict[str, Any]:
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
    rates: dict[str, list[float]] = {"direct": [], "gateway": []}
    p50s: dict[str, list[float]] = {"direct": [], "gateway": []}
    counts = {"direct": 0, "gateway": 0}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for url, headers in routes.values():  # warm-up: connections, first compiles
            await load(session, url, headers, body, 16, min(seconds, 1.0))
        # Short runs in pairs, the order flipping each pair: the machine's other load drifts,
        # and each pair's ratio sees nearly the same drift on both sides.
        for pair in range(pairs):
            names = ["direct", "gateway"] if pair % 2 == 0 else ["gateway", "direct"]
            for name in names:
                url, headers = routes[name]
                rate, samples = await load(session, url, headers, body, 16, seconds)
                rates[name].append(rate)
                p50s[name].append(quantile(samples, 0.5))
                counts[name] += len(samples)
        single: dict[str, list[float]] = {"direct": [], "gateway": []}
        ping = {"model": SERVED, "prompt": "ping", "max_tokens": 1}
        for _ in range(pings):
            for name, (url, headers) in routes.items():
                url = url.replace("chat/completions", "completions")
                started = time.perf_counter()
                async with session.post(url, json=ping, headers=headers) as response:
                    await response.read()
                single[name].append(time.perf_counter() - started)
    ratios = [g / d for g, d in zip(rates["gateway"], rates["direct"], strict=True)]
    added = [g - d for g, d in zip(p50s["gateway"], p50s["direct"], strict=True)]
    one = {name: quantile(samples, 0.5) for name, samples in single.items()}
    return {
        "clients": 16,
        "tokens_per_request": 32,
        "pairs": pairs,
        "direct_tokens_per_s": round(statistics.median(rates["direct"]), 1),
        "gateway_tokens_per_s": round(statistics.median(rates["gateway"]), 1),
        "throughput_ratio": round(statistics.median(ratios), 3),
        "throughput_ratio_per_pair": [round(r, 3) for r in ratios],
        "direct_p50_ms": round(statistics.median(p50s["direct"]) * 1000, 2),
        "added_p50_ms_16_clients": round(statistics.median(added) * 1000, 2),
        "direct_1token_p50_ms": round(one["direct"] * 1000, 2),
        "gateway_1token_p50_ms": round(one["gateway"] * 1000, 2),
        "added_p50_ms_1_client": round((one["gateway"] - one["direct"]) * 1000, 2),
        # one client in sequence: throughput is 1 / latency, so this is its throughput ratio
        "throughput_ratio_1_client": round(one["direct"] / one["gateway"], 3),
        "requests": counts,
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


async def ask(
    session: aiohttp.ClientSession, gateway: GatewayProcess, prompt: str, question: int
) -> float:
    """One streamed question under a long system prompt; returns its time to first token."""
    body = {
        "model": "main",
        "messages": [
            {"role": "system", "content": prompt},
            {"role": "user", "content": f"Question {question}: what now?"},
        ],
        "max_tokens": 4,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {gateway.token}"}
    started = time.perf_counter()
    async with session.post(f"{gateway.url}/chat/completions", json=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        first = None
        async for _chunk in r.content.iter_any():
            first = first or time.perf_counter()
    assert first is not None
    return first - started


async def one_pass(
    session: aiohttp.ClientSession, gateway: GatewayProcess, prompts: list[str], seed: int
) -> list[float]:
    """Every agent asks once, in a random order, four at a time."""
    order = list(range(len(prompts)))
    random.Random(seed).shuffle(order)
    semaphore = asyncio.Semaphore(4)
    ttfts: list[float] = []

    async def bounded(index: int) -> None:
        async with semaphore:
            ttfts.append(await ask(session, gateway, prompts[index], seed))

    await asyncio.gather(*(bounded(i) for i in order))
    return ttfts


async def prefix_hits(base_url: str) -> tuple[float, float]:
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/metrics") as r:
        text = await r.text()

    def total(name: str) -> float:
        pattern = rf"^vllm:{name}(?:{{[^}}]*}})? ([0-9.e+]+)$"
        return sum(float(v) for v in re.findall(pattern, text, re.M))

    return total("prefix_cache_hits_total"), total("prefix_cache_queries_total")


async def affinity(
    servers: list[VllmServer], tokenizer: Path, rounds: int, agents: int = AGENTS_PER_PHASE
) -> dict[str, Any]:
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
    result: dict[str, Any] = {"agents": agents, "prompt_tokens": PROMPT_TOKENS}
    routers = ("round_robin", "affinity")
    # each router with its own agents (prompts), so neither finds the other's prefixes cached
    prompts = {
        router: system_prompts(tokenizer, agents, n * agents) for n, router in enumerate(routers)
    }
    gateways = {router: GatewayProcess(endpoints, router, None) for router in routers}
    ttfts: dict[str, list[float]] = {router: [] for router in routers}
    per_round: list[float] = []
    hits: dict[str, list[float]] = {router: [0.0, 0.0] for router in routers}
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            for router in routers:  # warm-up: each agent once, one at a time
                for prompt in prompts[router]:
                    await ask(session, gateways[router], prompt, 0)
            # Rounds alternate between the routers (order flipping), as the pairs above do.
            for round_ in range(1, rounds + 1):
                p50 = {}
                order = routers if round_ % 2 else routers[::-1]
                for router in order:
                    start = [await prefix_hits(s.base_url) for s in servers]
                    samples = await one_pass(session, gateways[router], prompts[router], round_)
                    end = [await prefix_hits(s.base_url) for s in servers]
                    for a, b in zip(end, start, strict=True):
                        hits[router][0] += a[0] - b[0]
                        hits[router][1] += a[1] - b[1]
                    ttfts[router] += samples
                    p50[router] = quantile(samples, 0.5)
                per_round.append(p50["affinity"] / p50["round_robin"])
    finally:
        for gateway in gateways.values():
            gateway.close()
    for router in routers:
        result[router] = {
            "requests": len(ttfts[router]),
            "ttft_p50_ms": round(quantile(ttfts[router], 0.5) * 1000, 2),
            "ttft_p90_ms": round(quantile(ttfts[router], 0.9) * 1000, 2),
            "prefix_cache_hit_rate": round(hits[router][0] / hits[router][1], 3)
            if hits[router][1]
            else None,
        }
    result["ttft_p50_ratio"] = round(
        result["affinity"]["ttft_p50_ms"] / result["round_robin"]["ttft_p50_ms"], 3
    )
    result["ttft_p50_ratio_per_round"] = [round(r, 3) for r in per_round]
    return result


def isolated(seconds: float, pairs: int, pings: int = 100) -> dict[str, Any]:
    """The overhead phase against a fixed-latency fake upstream in its own process."""
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-c", FIXED_LATENCY_UPSTREAM, str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert upstream.stdout is not None and upstream.stdout.readline().strip() == "ready"
        base_url = f"http://127.0.0.1:{port}"
        endpoint = {
            "pool": "main",
            "replica": "fake",
            "base_url": base_url,
            "served_name": SERVED,
            "model": "fixed-latency",
            "revision": None,
        }
        gateway = GatewayProcess([endpoint], "affinity", None)
        try:
            figures = asyncio.run(overhead(base_url, gateway, seconds, pairs, pings))
        finally:
            figures_records = gateway.close()
        figures["records"] = figures_records
        figures["budget_spent_tokens"] = gateway.budget_spent
        figures["gateway_cpu_ms_per_call"] = round(gateway.cpu_at_close * 1000 / figures_records, 3)
        return figures
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)


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
        startup_timeout_s=600,  # a loaded machine (other work on the same cores) takes minutes
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=2.5, help="per load run")
    parser.add_argument("--pairs", type=int, default=6, help="direct/gateway run pairs")
    parser.add_argument("--rounds", type=int, default=6, help="measured passes per router")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="overhead phase: pin this process and the gateway to core 0 (replica A has core 1)",
    )
    parser.add_argument(
        "--phases",
        nargs="+",
        choices=["overhead", "isolated", "affinity"],
        default=["overhead", "isolated", "affinity"],
    )
    parser.add_argument(
        "--budgets",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the gateway enforces a token budget (limits.toml, its bucket in NATS KV)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="the phases asked for, briefly (tests)"
    )
    args = parser.parse_args()
    global POLICIES, BUDGETS
    BUDGETS = args.budgets
    with bench_policies() as POLICIES:
        run(args)


def run(args: argparse.Namespace) -> None:
    pings, agents = SINGLE_CALLS, AGENTS_PER_PHASE  # 1-token calls per route, agents per router
    if args.smoke:
        args.seconds, args.pairs, args.rounds, pings, agents = 0.5, 1, 1, 5, 4
    from agentd.inference import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="bench-inference-"))
    model = build_tiny_model(work / "model")
    servers: list[VllmServer] = []
    started = time.perf_counter()
    try:
        # both at once: a start is mostly waiting (loading, warm-up), one core each
        with ThreadPoolExecutor(2) as pool:
            needed = ("1", "0") if {"overhead", "affinity"} & set(args.phases) else ()
            starting = [pool.submit(start_server, model, work, core) for core in needed]
            for future in starting:
                with contextlib.suppress(Exception):  # the first error is raised below
                    servers.append(future.result())
            for future in starting:
                future.result()
        startup_s = time.perf_counter() - started
        figures: dict[str, Any] = {}
        if "overhead" in args.phases:
            replica_a = {
                "pool": "main",
                "replica": "cpu-1",
                "base_url": servers[0].base_url,
                "served_name": SERVED,
                "model": "tiny-random",
                "revision": None,
            }
            mine = os.sched_getaffinity(0)
            if args.pin:
                os.sched_setaffinity(0, {0})
            gateway = GatewayProcess([replica_a], "affinity", {0} if args.pin else None)
            try:
                figures = asyncio.run(
                    overhead(servers[0].base_url, gateway, args.seconds, args.pairs, pings)
                )
            finally:
                records = gateway.close()
                os.sched_setaffinity(0, mine)
            figures["records"] = records
            figures["budget_spent_tokens"] = gateway.budget_spent
            figures["gateway_cpu_ms_per_call"] = round(gateway.cpu_at_close * 1000 / records, 3)
            figures["pinned"] = args.pin
        alone = isolated(args.seconds, args.pairs, pings) if "isolated" in args.phases else {}
        routing: dict[str, Any] = {}
        if "affinity" in args.phases:
            routing = asyncio.run(affinity(servers, model / "tokenizer.json", args.rounds, agents))
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(
        json.dumps(
            {
                "benchmark": "inference",
                "vllm_startup_s": round(startup_s, 1),
                "gateway_vs_direct": figures,
                "gateway_vs_fixed_latency_upstream": alone,
                "affinity_vs_round_robin": routing,
                "total_s": round(time.perf_counter() - started, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
