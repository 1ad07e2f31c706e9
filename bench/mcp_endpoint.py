"""agentd's MCP endpoint, measured against a plain MCP server and the agent's own path, in the
same run.

One nats-server; the tool gateway (policy enforced: one allow rule) and the MCP endpoint run in
this process, the client is the official SDK's (`streamable_http_client` + `ClientSession`,
one session, calls one after another). Paths, each with a new call (a fresh key) every time:

- plain_mcp: the same echo tool on the same SDK stack with nothing in front (low-level server,
  streamable HTTP, JSON responses, uvicorn): what any MCP tool call costs, ungoverned;
- gateway: the call as an agent makes it, a NATS request on agentd.tool.<agent>.<tool>;
- mcp: the call through agentd's MCP endpoint (bearer token, guard, then that same request).

`mcp / plain_mcp` is what governance adds to an MCP call; `mcp - gateway` what the MCP
transport adds to a governed call.

Run: PYTHONPATH=. .venv/bin/python bench/mcp_endpoint.py [--calls 300] [--smoke]  (JSON)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import anyio  # noqa: E402
import httpx  # noqa: E402
import mcp.types as types  # noqa: E402
import nats  # noqa: E402
import uvicorn  # noqa: E402
from _common import nats_server, percentiles, timed  # noqa: E402
from mcp import ClientSession  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.server.lowlevel import Server  # noqa: E402
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager  # noqa: E402

from agentd.bus import Subjects  # noqa: E402
from agentd.config import McpEndpointConfig, ToolsConfig  # noqa: E402
from agentd.policy import DecisionPoint  # noqa: E402
from agentd.tools import McpEndpoint, ToolGateway, ToolRegistry  # noqa: E402
from agentd.tools._mcp_guard import McpCaller  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOOLS = """
from agentd.tools import tool

@tool("bench.echo")
async def echo(text: str, n: int = 0) -> dict:
    return {"text": text, "n": n}
"""
TOKEN = "agentd-bench-token"
ARGS = {"text": "hello", "n": 1}


def _nodelay() -> httpx.AsyncHTTPTransport:
    """The client's side of TCP_NODELAY: httpx writes a request's headers and body separately,
    and without it the body waits for the server's delayed ACK (tens of ms on loopback)."""
    return httpx.AsyncHTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])


@asynccontextmanager
async def session_on(url: str, token: str | None = None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx.AsyncClient(headers=headers, timeout=30, transport=_nodelay()) as http,
        streamable_http_client(url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


@asynccontextmanager
async def plain_mcp_server() -> AsyncIterator[str]:
    """The echo tool on the same SDK stack as agentd's endpoint (low-level server, streamable
    HTTP session manager, JSON responses, uvicorn) with nothing in front: the floor of an MCP
    tool call over HTTP."""
    plain: Server[Any, Any] = Server("plain")

    @plain.list_tools()  # type: ignore[no-untyped-call, untyped-decorator]
    async def tools() -> list[types.Tool]:
        schema = {"type": "object", "properties": {"text": {"type": "string"}}}
        return [types.Tool(name="bench.echo", inputSchema=schema)]

    @plain.call_tool(validate_input=False)  # type: ignore[untyped-decorator]
    async def call(name: str, args: dict[str, Any]) -> dict[str, Any]:
        return {"text": args["text"], "n": args.get("n", 0)}

    manager = StreamableHTTPSessionManager(plain, json_response=True)
    config = uvicorn.Config(
        manager.handle_request,
        lifespan="off",
        interface="asgi3",
        log_config=None,
        access_log=False,
        http="h11",
        ws="none",
    )
    server = uvicorn.Server(config)
    sock = socket.create_server(("127.0.0.1", 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as agentd's endpoint does
    port = sock.getsockname()[1]
    async with manager.run(), anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        yield f"http://127.0.0.1:{port}/mcp"  # connections wait in the socket's backlog
        server.should_exit = True


async def main(calls: int, directory: Path) -> dict[str, Any]:
    policy_dir = directory / "policies"
    policy_dir.mkdir()
    shutil.copy(REPO / "policies" / "model.conf", policy_dir)
    (policy_dir / "policy.csv").write_text("p, bench, tool:bench.echo, call, allow\n")
    (policy_dir / "constraints.toml").write_text("")
    (policy_dir / "limits.toml").write_text("")
    tools_dir = directory / "tools"
    tools_dir.mkdir()
    (tools_dir / "bench.py").write_text(TOOLS)
    registry = ToolRegistry.load(tools_dir)

    with nats_server(directory / "nats") as url:
        caller, server = await nats.connect(url), await nats.connect(url)
        subjects = Subjects("bench")
        records: list[str] = []
        gateway = ToolGateway(
            server,
            server.jetstream(),
            subjects,
            point=DecisionPoint.from_dir(policy_dir),
            registry=registry,
            allowed_tools=lambda agent: ["bench.echo"],
            record=lambda kind, **fields: records.append(kind),
            config=ToolsConfig(),
        )
        endpoint = McpEndpoint(
            server,
            subjects,
            config=McpEndpointConfig(enabled=True, listen="127.0.0.1:0"),
            tools=ToolsConfig(),
            registry=registry,
            allowed_tools=lambda agent: ["bench.echo"],
            authenticate=lambda token: McpCaller("bench", "bench-1") if token == TOKEN else None,
            record=lambda kind, **fields: records.append(kind),
        )

        async def gateway_call(i: int) -> None:
            body = {"args": ARGS, "message_id": f"g-{i}", "call_id": "c1"}
            data = json.dumps(body).encode()
            reply = await caller.request(subjects.tool("bench", "bench.echo"), data, timeout=10)
            assert json.loads(reply.data)["ok"], reply.data

        async with anyio.create_task_group() as tg:
            await tg.start(gateway.run)
            await tg.start(endpoint.run)
            assert endpoint.url is not None
            async with (
                plain_mcp_server() as plain_url,
                session_on(plain_url) as plain,
                session_on(endpoint.url, TOKEN) as governed,
            ):

                async def plain_call(i: int) -> None:
                    result = await plain.call_tool("bench.echo", ARGS)
                    assert not result.isError, result.content

                async def mcp_call(i: int) -> None:
                    result = await governed.call_tool("bench.echo", ARGS)
                    assert not result.isError, result.content

                for one in (plain_call, gateway_call, mcp_call):  # warm every path
                    await timed(min(calls, 30), one)
                results = {"plain_mcp": [], "gateway": [], "mcp": []}  # type: dict[str, list[float]]
                for _ in range(3):  # interleaved, so the machine's other load hits all three
                    results["plain_mcp"] += await timed(calls // 3 or 1, plain_call)
                    results["gateway"] += await timed(calls // 3 or 1, gateway_call)
                    results["mcp"] += await timed(calls // 3 or 1, mcp_call)
            await endpoint.shutdown()
            await gateway.shutdown()
        await caller.close()
        await server.close()
    latency = {k: percentiles(v) for k, v in results.items()}
    p50 = {k: v["p50_us"] for k, v in latency.items()}
    return {
        "calls_per_path": len(results["mcp"]),
        "latency": latency,
        "ratio_p50_mcp_vs_plain_mcp": round(p50["mcp"] / p50["plain_mcp"], 2),
        "ratio_p50_mcp_vs_gateway": round(p50["mcp"] / p50["gateway"], 2),
        "mcp_transport_adds_p50_us": round(p50["mcp"] - p50["gateway"], 1),
        "records": len(records),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--smoke", action="store_true", help="a few calls: does it run")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = asyncio.run(main(6 if options.smoke else options.calls, Path(tmp)))
    print(json.dumps(figures, indent=2))
