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
  policy, idempotency claim and store (two KV round trips), records, then the MCP call.

Run: PYTHONPATH=. .venv/bin/python bench/tools_mcp.py [--calls 400] [--smoke]   (prints JSON)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
POLICY = "p, bench, tool:mcp.echo, call, allow\n"


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
                allowed_tools=lambda agent: ["mcp.echo"],
                record=lambda kind, **fields: records.append(kind),
                config=ToolsConfig(),
            )

            async def gateway_call(i: int) -> None:
                body = {"args": {"text": "hello"}, "message_id": "m", "call_id": f"g-{i}"}
                data = json.dumps({**body, "run_id": "r", "conversation_id": "c"}).encode()
                reply = await caller.request(subjects.tool("bench", "mcp.echo"), data, timeout=10)
                assert json.loads(reply.data)["ok"] is True, reply.data

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
                for one in (direct_call, session_call):
                    await timed(warm, one)
                await timed(warm, lambda i: gateway_call(100_000 + i))
                # alternate the paths in rounds, so the machine's other load falls on all three
                samples: dict[str, list[float]] = {"direct": [], "session": [], "gateway": []}
                rounds = 10
                for r in range(rounds):
                    samples["direct"] += await timed(calls // rounds, direct_call)
                    samples["session"] += await timed(calls // rounds, session_call)
                    offset = r * calls
                    samples["gateway"] += await timed(
                        calls // rounds, lambda i, o=offset: gateway_call(o + i)
                    )
                await gateway.shutdown()
                tg.cancel_scope.cancel()
            await caller.close()
            await server.close()
    finally:
        with contextlib.suppress(ProcessLookupError):  # it ends with its connection
            launcher.kill()
        await launcher.wait()
    results = {path: percentiles(s) for path, s in samples.items()}
    direct = results["direct"]
    return {
        "calls_per_path": len(samples["direct"]),
        "latency": results,
        "ratio_vs_direct": {
            path: {
                "p50": round(results[path]["p50_us"] / direct["p50_us"], 2),
                "p99": round(results[path]["p99_us"] / direct["p99_us"], 2),
            }
            for path in ("session", "gateway")
        },
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
