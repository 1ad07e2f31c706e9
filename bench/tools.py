"""The tool gateway, measured against raw NATS request/reply in the same run.

One nats-server; the gateway runs in this process with the policy enforced (a small policy:
one allow rule, no limits), a `bench.echo` async tool and a list-collecting recorder. Paths:

- raw: request/reply to a plain responder on its own connection (the floor of any tool call);
- executed: a new call (new call id): spec, schema, decide(), stored-result lookup, rate limit,
  claim (KV create), run, store (KV update), two records;
- replayed: the same call again: decide() and one KV get;
- denied: a call policy denies (no KV at all);
- thread: the same as executed, with a sync tool (a worker thread);
- tainted: executed calls from a run the daemon holds tainted (no [[taint]] rule for the tool:
  the lookup and the records' taint fields, nothing else);
- untrusted: executed calls of a tool declared `trust="untrusted"` (its result taints the run:
  the taint written to the KV bucket, one concurrent round of puts);
- throughput: executed calls with 64 in flight, against raw request/reply with 64 in flight.

The gateway holds a running `TaintBook` (as the daemon's does) unless `--no-taint`.

Section `local` (`local_tools`): a tool defined in the graph (a LangChain `StructuredTool`, async
echo) called by a `ToolNode` in a compiled graph, inside a run of a real `AgentContext` with the
worker's interception installed, against the same graph and body with the interception passed
by (the tool marked as a gateway proxy: run inline in the worker, as without agentd):

- inline: ToolNode -> the body (the floor: what the graph costs without governance);
- governed: ToolNode -> begin (decide, claim: KV create) -> the body -> end (store: KV update,
  records), each call a new tool call id; each graph call waits for the end's answer, as the
  worker does before it finishes a run (a real run's next model turn overlaps it instead);
- replayed: the same tool call ids again (begin finds the stored result; the body does not run);
- overlapped: governed, but the graph call does not wait for the end's answer (the next call
  overlaps it, as a real run's next model turn does; the round's last report is awaited).

By default the gateway shares the worker's process and event loop, so every step of the daemon's
work (the end's store included) takes turns with the graph's. `--process` runs it in a process of
its own, as the daemon's gateway is the replica's: the figures a real replica sees.

Section `mcp` (bench/tools_mcp.py): an MCP tool (the SDK test server's `echo`, stdio) called
through agentd's gateway as a replica calls it, against the SDK's own client calling the same
server directly, interleaved in the same run.

Run: PYTHONPATH=. .venv/bin/python bench/tools.py [--calls 400] [--no-taint]
     [--section all|gateway|local|mcp] [--process] [--smoke]   (prints JSON)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import anyio  # noqa: E402
import nats  # noqa: E402
from _common import nats_server, percentiles, timed  # noqa: E402

from agentd.bus import Subjects  # noqa: E402
from agentd.config import ToolsConfig  # noqa: E402
from agentd.policy import DecisionPoint  # noqa: E402
from agentd.tools import Taint, TaintBook, ToolGateway, ToolRegistry  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOOLS = """
from agentd.tools import tool

@tool("bench.echo")
async def echo(text: str, n: int = 0) -> dict:
    return {"text": text, "n": n}

@tool("bench.echo_sync")
def echo_sync(text: str, n: int = 0) -> dict:
    return {"text": text, "n": n}

@tool("bench.fetch", trust="untrusted")
async def fetch(text: str, n: int = 0) -> dict:
    return {"text": text, "n": n}
"""
POLICY = "".join(
    f"p, bench, tool:bench.{name}, call, allow\n" for name in ("echo", "echo_sync", "fetch")
)


async def paced(calls: int, one: Callable[[int], Awaitable[Any]]) -> list[float]:
    """`timed`, with a 2 ms pause between calls (not timed): on a loaded machine the scheduler
    preempts a process that never sleeps, so a path without I/O (inline) would pay for the
    others' load in back-to-back calls, while a path that waits on the bus would not."""
    samples = []
    for i in range(calls):
        await anyio.sleep(0.002)
        started = time.perf_counter()
        await one(i)
        samples.append(time.perf_counter() - started)
    return samples


async def throughput(calls: int, one: Callable[[int], Awaitable[Any]], inflight: int) -> float:
    started = time.perf_counter()
    sem = anyio.Semaphore(inflight)

    async def bounded(i: int) -> None:
        async with sem:
            await one(i)

    async with anyio.create_task_group() as tg:
        for i in range(calls):
            tg.start_soon(bounded, i)
    return round(calls / (time.perf_counter() - started), 1)


async def main(calls: int, directory: Path, *, taint: bool = True) -> dict[str, Any]:
    """Section `gateway`: tools of the tool directory, called over NATS as `ctx.call_tool` does."""
    policy_dir = directory / "policies"
    policy_dir.mkdir()
    shutil.copy(REPO / "policies" / "model.conf", policy_dir)
    (policy_dir / "policy.csv").write_text(POLICY)
    (policy_dir / "constraints.toml").write_text("")
    (policy_dir / "limits.toml").write_text("")
    tools_dir = directory / "tools"
    tools_dir.mkdir()
    (tools_dir / "bench.py").write_text(TOOLS)

    with nats_server(directory / "nats") as url:
        caller, server = await nats.connect(url), await nats.connect(url)

        async def echo(msg: Any) -> None:
            await msg.respond(msg.data)

        await server.subscribe("bench.raw", cb=echo)
        await server.flush()
        subjects = Subjects("bench")
        records: list[str] = []
        book = TaintBook(window_of=lambda agent: 0.0, ttl_s=3600) if taint else None
        gateway = ToolGateway(
            server,
            server.jetstream(),
            subjects,
            point=DecisionPoint.from_dir(policy_dir),
            registry=ToolRegistry.load(tools_dir),
            allowed_tools=lambda agent: [
                "bench.echo",
                "bench.echo_sync",
                "bench.fetch",
                "bench.nope",
            ],
            record=lambda kind, **fields: records.append(kind),
            # 64 calls in flight from one agent: the running-call bounds must not refuse them
            config=ToolsConfig(max_running_per_agent=64, max_running_per_tool=64),
            taint=book,
        )
        body = {"args": {"text": "hello", "n": 1}, "message_id": "m", "run_id": "r"}
        raw = json.dumps(body).encode()

        async def raw_call(i: int) -> None:
            await caller.request("bench.raw", raw, timeout=10)

        def gateway_call(
            tool: str, key: str, expect_ok: bool = True, conversation: str = "c"
        ) -> Callable[[int], Any]:
            async def one(i: int) -> None:
                conversation_id = conversation.format(i=i)
                call = {**body, "call_id": key.format(i=i), "conversation_id": conversation_id}
                data = json.dumps(call).encode()
                reply = await caller.request(subjects.tool("bench", tool), data, timeout=10)
                assert json.loads(reply.data)["ok"] is expect_ok, reply.data

            return one

        async with anyio.create_task_group() as tg:
            if book is not None:
                await tg.start(book.run, server.jetstream(), subjects.taint_bucket)
                origin = Taint("bench-record", "bench.fetch", "bench", time.time())
                await book.taint_received(origin, "tainted", None)
            await tg.start(gateway.run)
            await timed(50, raw_call)  # warm both paths
            await timed(50, gateway_call("bench.echo", "warm-{i}"))
            results = {
                "raw": percentiles(await timed(calls, raw_call)),
                "executed": percentiles(await timed(calls, gateway_call("bench.echo", "e-{i}"))),
                "replayed": percentiles(await timed(calls, gateway_call("bench.echo", "e-0"))),
                "denied": percentiles(
                    await timed(calls, gateway_call("bench.nope", "d-{i}", expect_ok=False))
                ),
                "thread": percentiles(await timed(calls, gateway_call("bench.echo_sync", "s-{i}"))),
            }
            if book is not None:
                tainted = gateway_call("bench.echo", "x-{i}", conversation="tainted")
                results["tainted"] = percentiles(await timed(calls, tainted))
                untrusted = gateway_call("bench.fetch", "u-{i}", conversation="u-{i}")
                results["untrusted"] = percentiles(await timed(calls, untrusted))
            raw_rps = await throughput(calls * 4, raw_call, 64)
            tool_rps = await throughput(calls * 4, gateway_call("bench.echo", "t-{i}"), 64)
            await gateway.shutdown()
            if book is not None:
                await book.shutdown()
        await caller.close()
        await server.close()
    p50 = {k: v["p50_us"] for k, v in results.items()}
    return {
        "calls_per_path": calls,
        "latency": results,
        "ratio_p50_vs_raw": {k: round(p50[k] / p50["raw"], 2) for k in p50 if k != "raw"},
        "throughput_64_inflight": {
            "raw_req_per_s": raw_rps,
            "executed_calls_per_s": tool_rps,
            "ratio": round(raw_rps / tool_rps, 2),
        },
        "records": len(records),
    }


def _local_policy(directory: Path) -> Path:
    policy_dir = directory / "local-policies"
    policy_dir.mkdir()
    shutil.copy(REPO / "policies" / "model.conf", policy_dir)
    (policy_dir / "policy.csv").write_text("p, bench, tool:bench_local, call, allow\n")
    (policy_dir / "constraints.toml").write_text("")
    (policy_dir / "limits.toml").write_text("")
    return policy_dir


def _tool_node_graph(tools: list[Any]) -> Any:
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode

    builder = StateGraph(MessagesState)
    builder.add_node("tools", ToolNode(tools))
    builder.add_edge(START, "tools")
    builder.add_edge("tools", END)
    return builder.compile()


def _local_gateway(nc: Any, directory: Path, records: list[str]) -> ToolGateway:
    return ToolGateway(
        nc,
        nc.jetstream(),
        Subjects("benchlocal"),
        point=DecisionPoint.from_dir(_local_policy(directory)),
        registry=ToolRegistry.load(directory / "tools"),
        allowed_tools=lambda agent: [],
        record=lambda kind, **fields: records.append(kind),
        config=ToolsConfig(),
    )


async def serve_local_gateway(url: str, directory: Path) -> None:
    """The local section's gateway in a process of its own, as the daemon's is (`--process`):
    serves until its stdin closes, then prints how many records it wrote."""
    server = await nats.connect(url)
    records: list[str] = []
    gateway = _local_gateway(server, directory, records)
    async with anyio.create_task_group() as tg:
        await tg.start(gateway.run)
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)
        await gateway.shutdown()
    await server.close()
    print(len(records), flush=True)


async def local_tools(calls: int, directory: Path, *, process: bool = False) -> dict[str, Any]:
    """Section `local`: a governed ToolNode call vs the same tool run inline in the worker; with
    `process`, the gateway runs in a process of its own (as the daemon is the replica's)."""
    from langchain_core.messages import AIMessage, ToolMessage
    from langchain_core.tools import StructuredTool

    from agentd.worker import GATEWAY_MARK, AgentContext, RunInfo, govern_local_tools
    from agentd.worker import settle_local_tools as settle

    async def echo(text: str, n: int = 0) -> dict[str, Any]:
        return {"text": text, "n": n}

    governed = StructuredTool.from_function(coroutine=echo, name="bench_local", description="e")
    inline = StructuredTool.from_function(
        coroutine=echo, name="bench_inline", description="e", metadata={GATEWAY_MARK: True}
    )
    graph = _tool_node_graph([governed, inline])
    with nats_server(directory / "nats-local") as url:
        worker, server = await nats.connect(url), await nats.connect(url)
        subjects = Subjects("benchlocal")
        records: list[str] = []
        gateway = _local_gateway(server, directory, records)
        ctx = AgentContext(worker, subjects, "bench", "bench-0")
        govern_local_tools(ctx)
        token = ctx._enter(RunInfo("bench-run", "bench-message", "bench-conversation", "bench"))

        def node_call(tool: str, key: str, wait: bool = True) -> Callable[[int], Awaitable[None]]:
            async def one(i: int) -> None:
                call = {"name": tool, "id": key.format(i=i), "args": {"text": "hello", "n": i}}
                state = {"messages": [AIMessage(content="", tool_calls=[call])]}
                out = await graph.ainvoke(state)
                if wait:  # as the worker does before a run is finished: the outcome stored
                    await settle()
                reply = out["messages"][-1]
                assert isinstance(reply, ToolMessage) and reply.status == "success", reply

            return one

        separate = None
        if process:  # its policy files in a folder of their own
            (directory / "gateway").mkdir()
            shutil.copytree(directory / "tools", directory / "gateway" / "tools")
            command = [
                sys.executable,
                __file__,
                "--serve-local-gateway",
                url,
                directory / "gateway",
            ]
            separate = await anyio.open_process([str(c) for c in command], stderr=None)
            assert separate.stdout is not None
            ready = await separate.stdout.receive()
            assert ready.startswith(b"ready"), ready
        try:
            async with anyio.create_task_group() as tg:
                if separate is None:
                    await tg.start(gateway.run)
                await paced(50, node_call("bench_inline", "warm-inline-{i}"))  # warm both paths
                await paced(50, node_call("bench_local", "warm-{i}"))
                # the paths alternate in rounds, so the machine's other load falls on each alike
                paths = ("inline", "governed", "replayed", "overlapped")
                samples: dict[str, list[float]] = {path: [] for path in paths}
                rounds = max(1, min(10, calls // 20))
                n = calls // rounds

                async def inline_round(r: int) -> None:
                    samples["inline"] += await paced(n, node_call("bench_inline", f"i{r}-{{i}}"))

                async def governed_round(r: int) -> None:  # then the same ids again
                    samples["governed"] += await paced(n, node_call("bench_local", f"g{r}-{{i}}"))
                    samples["replayed"] += await paced(n, node_call("bench_local", f"g{r}-{{i}}"))

                async def overlapped_round(r: int) -> None:
                    overlapped = node_call("bench_local", f"o{r}-{{i}}", wait=False)
                    samples["overlapped"] += await paced(n, overlapped)
                    await settle()

                steps = [inline_round, governed_round, overlapped_round]
                for r in range(rounds):  # and each goes first in turn
                    for step in steps[r % 3 :] + steps[: r % 3]:
                        await step(r)
                results = {
                    path: {**percentiles(got), "min_us": round(min(got) * 1e6, 1)}
                    for path, got in samples.items()
                }
                await gateway.shutdown()
            if separate is not None:
                assert separate.stdin is not None and separate.stdout is not None
                await separate.stdin.aclose()
                said = b""
                async for chunk in separate.stdout:
                    said += chunk
                records += ["(in the gateway process)"] * int(said.split()[-1])
                await separate.wait()
        finally:
            if separate is not None and separate.returncode is None:
                separate.kill()
            ctx._exit(token)
            await worker.close()
            await server.close()
    base = results["inline"]
    return {
        "calls_per_path": len(samples["inline"]),
        "latency": results,
        "added_us": {
            path: {q: round(results[path][q] - base[q], 1) for q in ("min_us", "p50_us", "p99_us")}
            for path in ("governed", "replayed", "overlapped")
        },
        "ratio_p50_vs_inline": {
            path: round(results[path]["p50_us"] / base["p50_us"], 2)
            for path in ("governed", "replayed", "overlapped")
        },
        "records": len(records),
    }


async def run_sections(
    section: str, calls: int, directory: Path, taint: bool, process: bool = False
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    if section in {"all", "gateway"}:
        gateway_dir = directory / "gateway"
        gateway_dir.mkdir()
        figures["gateway"] = await main(calls, gateway_dir, taint=taint)
    if section in {"all", "local"}:
        local_dir = directory / "local"
        (local_dir / "tools").mkdir(parents=True)
        (local_dir / "tools" / "bench.py").write_text(TOOLS)  # a registry, as the daemon's
        figures["local"] = await local_tools(calls, local_dir, process=process)
    if section in {"all", "mcp"}:  # an MCP tool through the gateway vs the SDK client direct
        import tools_mcp

        mcp_dir = directory / "mcp"
        mcp_dir.mkdir()
        figures["mcp"] = await tools_mcp.main(calls, mcp_dir)
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--no-taint", action="store_true", help="the gateway without a TaintBook")
    parser.add_argument("--section", choices=["all", "gateway", "local", "mcp"], default="all")
    parser.add_argument("--smoke", action="store_true", help="few calls (the tests run it)")
    parser.add_argument(
        "--process", action="store_true", help="section local: the gateway in its own process"
    )
    parser.add_argument(
        "--serve-local-gateway", nargs=2, metavar=("URL", "DIR"), help=argparse.SUPPRESS
    )
    options = parser.parse_args()
    if options.serve_local_gateway:
        url, folder = options.serve_local_gateway
        asyncio.run(serve_local_gateway(url, Path(folder)))
        sys.exit(0)
    count = 20 if options.smoke else options.calls
    with tempfile.TemporaryDirectory() as tmp:
        figures = asyncio.run(
            run_sections(options.section, count, Path(tmp), not options.no_taint, options.process)
        )
    print(json.dumps(figures, indent=2))
