"""An MCP tool through agentd's gateway, measured against the MCP SDK's client calling the same
server directly, in the same run.

One nats-server; the tool gateway runs in this process with the policy enforced (one allow
rule, no limits) and a real MCP server (tests/tools/mcp_server.py, the official SDK) mounted as
`[tools.mcp.mcp]` through the launcher's socket, as the daemon mounts it. Paths, each calling
the server's `echo` tool:

- direct: the SDK's `ClientSession` over `stdio_client` (its own copy of the server), the way
  an agent calls an MCP server with no agentd in between;
- session: agentd's `McpMount.call` (its socket transport, the SDK session), no gateway: what
  the transport alone costs;
- gateway: `mcp.echo` requested over NATS like a replica's `ctx.call_tool`: spec, schema,
  policy, idempotency claim and store (two KV round trips), records, then the MCP call;
- readonly: the same for `mcp.lookup`, which the (trusted) server annotates `readOnlyHint`:
  no claim and no store (agentd/tools/README.md, "MCP servers": what a rerun of it does);
- nats: raw request/reply to a plain responder on the gateway's connection, the floor of any
  call through agentd (`floor_vs_direct` = (session + nats) / direct: what the gateway would
  cost if everything it does besides the hop and the MCP call were free).

Run: PYTHONPATH=. .venv/bin/python bench/tools_mcp.py [--calls 400] [--smoke]   (prints JSON)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import anyio  # noqa: E402
import nats  # noqa: E402
from _common import nats_server, percentiles, timed  # noqa: E402
from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402

from agentd.bus import Subjects  # noqa: E402
from agentd.config import McpServerConfig, ToolsConfig  # noqa: E402
from agentd.policy import DecisionPoint  # noqa: E402
from agentd.tools import (  # noqa: E402
    MCP_LAUNCHER,
    McpMount,
    ToolGateway,
    ToolRegistry,
    mcp_connector,
)

REPO = Path(__file__).resolve().parents[1]
SERVER = REPO / "tests" / "tools" / "mcp_server.py"
POLICY = "p, bench, tool:mcp.echo, call, allow\np, bench, tool:mcp.lookup, call, allow\n"


async def main(calls: int, directory: Path) -> dict[str, Any]:
    policy_dir = directory / "policies"
    policy_dir.mkdir()
    shutil.copy(REPO / "policies" / "model.conf", policy_dir)
    (policy_dir / "policy.csv").write_text(POLICY)
    (policy_dir / "constraints.toml").write_text("")
    (policy_dir / "limits.toml").write_text("")
    address = f"@agentd-bench-mcp-{os.getpid()}"
    launcher = await anyio.open_process(
        [sys.executable, "-I", "-S", MCP_LAUNCHER, address, "--", sys.executable, str(SERVER)],
        stdin=None,
        stdout=None,
        stderr=None,
    )
    params = StdioServerParameters(command=sys.executable, args=[str(SERVER)])
    try:
        with nats_server(directory / "nats") as url:
            caller, server = await nats.connect(url), await nats.connect(url)
            subjects = Subjects("bench")
            registry = ToolRegistry()
            config = McpServerConfig(command="python", trust="trusted")
            mount = McpMount("mcp", config, registry, mcp_connector("mcp", config, address=address))
            records: list[str] = []
            gateway = ToolGateway(
                server,
                server.jetstream(),
                subjects,
                point=DecisionPoint.from_dir(policy_dir),
                registry=registry,
                allowed_tools=lambda agent: ["mcp.echo", "mcp.lookup"],
                record=lambda kind, **fields: records.append(kind),
                config=ToolsConfig(),
            )

            async def gateway_call(i: int, tool: str = "mcp.echo") -> None:
                body = {"args": {"text": "hello"}, "message_id": "m", "call_id": f"g-{i}"}
                data = json.dumps({**body, "run_id": "r", "conversation_id": "c"}).encode()
                reply = await caller.request(subjects.tool("bench", tool), data, timeout=10)
                answer = json.loads(reply.data)
                assert answer["ok"] is True and answer["replayed"] is False, reply.data

            async def shift(i: int, offset: int) -> None:  # new call ids in each round
                await gateway_call(offset + i)

            async def readonly_call(i: int) -> None:
                await gateway_call(i, "mcp.lookup")

            async def plain(msg: Any) -> None:
                await msg.respond(msg.data)

            await server.subscribe("bench.raw", cb=plain)
            raw = json.dumps({"args": {"text": "hello"}, "message_id": "m"}).encode()

            async def nats_call(i: int) -> None:
                await caller.request("bench.raw", raw, timeout=10)

            async def session_call(i: int) -> None:
                assert await mount.call("echo", {"text": "hello"}) == "hello"

            async with (
                stdio_client(params) as (read, write),
                ClientSession(read, write) as direct,
                anyio.create_task_group() as tg,
            ):
                await direct.initialize()

                async def direct_call(i: int) -> None:
                    result = await direct.call_tool("echo", {"text": "hello"})
                    assert result.content[0].text == "hello"  # type: ignore[union-attr]

                await tg.start(mount.run)
                with anyio.fail_after(30):
                    await mount.ready.wait()
                await tg.start(gateway.run)
                warm = max(10, calls // 8)
                for one in (direct_call, session_call, nats_call, readonly_call):
                    await timed(warm, one)
                await timed(warm, lambda i: gateway_call(100_000 + i))
                # alternate the paths in rounds, so the machine's other load falls on all alike
                paths = ("direct", "session", "gateway", "readonly", "nats")
                samples: dict[str, list[float]] = {path: [] for path in paths}
                rounds = 10
                for r in range(rounds):
                    samples["direct"] += await timed(calls // rounds, direct_call)
                    samples["session"] += await timed(calls // rounds, session_call)
                    shifted = functools.partial(shift, offset=r * calls)
                    samples["gateway"] += await timed(calls // rounds, shifted)
                    samples["readonly"] += await timed(calls // rounds, readonly_call)
                    samples["nats"] += await timed(calls // rounds, nats_call)
                await gateway.shutdown()
                tg.cancel_scope.cancel()
            await caller.close()
            await server.close()
    finally:
        with contextlib.suppress(ProcessLookupError):  # it ends with its connection
            launcher.kill()
        await launcher.wait()
    results = {path: percentiles(s) for path, s in samples.items()}
    base = results["direct"]
    return {
        "calls_per_path": len(samples["direct"]),
        "latency": results,
        "ratio_vs_direct": {
            path: {
                "p50": round(results[path]["p50_us"] / base["p50_us"], 2),
                "p99": round(results[path]["p99_us"] / base["p99_us"], 2),
            }
            for path in ("session", "gateway", "readonly")
        },
        "floor_vs_direct": round(
            (results["session"]["p50_us"] + results["nats"]["p50_us"]) / base["p50_us"], 2
        ),
        "records": len(records),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--smoke", action="store_true", help="a few calls: does it run")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = asyncio.run(main(20 if options.smoke else options.calls, Path(tmp)))
    print(json.dumps(figures, indent=2))
