"""A real MCP server for the tests, written with the official SDK (low-level `Server`).

    python tests/tools/mcp_server.py [--bad] [--http PORT]

Tools: `echo` (text), `add` (structured result), `pid` (its process id, so a test can kill it),
`sleep` (waits, so a test can kill it mid-call; writes its pid to $MCP_TEST_MARK first),
`fail` (answers an MCP tool error), `whoami` (the `Authorization` header over HTTP),
`read` (a file: the sandbox tests), `grow`
(offers a new tool `grownN` and notifies tools/list_changed), `lookup` (annotated
`readOnlyHint`) and `touch` (annotated `idempotentHint`): each says how often it ran, so a test
sees whether a rerun ran it again.
$MCP_TEST_EXTRA_TOOL names one more tool. `--bad` adds tools no gateway should mount: a
malformed schema, a schema strict mode cannot express (an open map), and `b.c` (a dotted
name: with server `a` it is `a.b.c`).
Over stdio by default; `--http PORT` serves streamable HTTP on 127.0.0.1:PORT at /mcp.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import anyio
import mcp.types as types
from mcp.server.lowlevel import Server

ECHO: dict[str, Any] = {
    "type": "object",
    "properties": {"text": {"type": "string", "maxLength": 200}},
    "required": ["text"],
}
ADD: dict[str, Any] = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
}
EMPTY: dict[str, Any] = {"type": "object", "properties": {}}
READ: dict[str, Any] = {
    "type": "object",
    "properties": {"path": {"type": "string"}},
    "required": ["path"],
}
SLEEP: dict[str, Any] = {
    "type": "object",
    "properties": {"seconds": {"type": "number"}},
    "required": ["seconds"],
}


def build(bad: bool) -> Server:
    server: Server = Server("agentd-test")
    grown: list[str] = []
    ran = {"lookup": 0, "touch": 0}

    @server.list_tools()  # type: ignore[no-untyped-call,untyped-decorator]
    async def list_tools() -> list[types.Tool]:
        tools = [
            types.Tool(name="echo", description="Echo the text back.", inputSchema=ECHO),
            types.Tool(name="add", description="Add two integers.", inputSchema=ADD),
            types.Tool(name="pid", description="This server's process id.", inputSchema=EMPTY),
            types.Tool(name="sleep", description="Wait a while.", inputSchema=SLEEP),
            types.Tool(name="fail", description="Always fails.", inputSchema=EMPTY),
            types.Tool(name="whoami", description="The Authorization header.", inputSchema=EMPTY),
            types.Tool(name="read", description="Read a file (hostile).", inputSchema=READ),
            types.Tool(name="grow", description="Offer one more tool.", inputSchema=EMPTY),
            types.Tool(
                name="lookup",
                description="Echo the text, read-only.",
                inputSchema=ECHO,
                annotations=types.ToolAnnotations(readOnlyHint=True),
            ),
            types.Tool(
                name="touch",
                description="Mark the text as seen (idempotent).",
                inputSchema=ECHO,
                annotations=types.ToolAnnotations(readOnlyHint=False, idempotentHint=True),
            ),
            *(types.Tool(name=n, description="grown", inputSchema=EMPTY) for n in grown),
        ]
        extra = os.environ.get("MCP_TEST_EXTRA_TOOL")
        if extra:  # a name chosen by the test (dot collisions)
            tools.append(types.Tool(name=extra, description="extra", inputSchema=EMPTY))
        if bad:
            malformed = {"type": "object", "properties": {"x": {"type": "nonsense"}}}
            open_map = {"type": "object", "additionalProperties": {"type": "string"}}
            tools += [
                types.Tool(name="malformed", description="bad", inputSchema=malformed),
                types.Tool(name="openmap", description="not strict", inputSchema=open_map),
                types.Tool(name="b.c", description="dotted", inputSchema=EMPTY),
            ]
        return tools

    @server.call_tool(validate_input=False)  # type: ignore[untyped-decorator]
    async def call_tool(name: str, args: dict[str, Any]) -> Any:
        if name == "echo":
            return [types.TextContent(type="text", text=str(args["text"]))]
        if name in ran:  # "<how often it ran>:<text>"
            ran[name] += 1
            return [types.TextContent(type="text", text=f"{ran[name]}:{args['text']}")]
        if name == "add":
            return {"sum": int(args["a"]) + int(args["b"])}
        if name == "pid":
            return {"pid": os.getpid()}
        if name == "sleep":
            mark = os.environ.get("MCP_TEST_MARK")
            if mark:
                await anyio.Path(mark).write_text(str(os.getpid()))
            await anyio.sleep(float(args["seconds"]))
            return {"slept": args["seconds"]}
        if name == "read":  # what a hostile server would try: the daemon's secrets
            return {"text": (await anyio.Path(str(args["path"])).read_text())[:200]}
        if name == "grow":  # a new tool, and the notification that the list changed
            grown.append(f"grown{len(grown) + 1}")
            await server.request_context.session.send_tool_list_changed()
            return {"tools": grown}
        if name == "fail":
            raise ValueError("this tool always fails")
        if name == "whoami":
            request = server.request_context.request
            header = request.headers.get("authorization") if request is not None else None
            return {"authorization": header}
        return {"called": name}

    return server


async def serve_stdio(server: Server) -> None:
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


def serve_http(server: Server, port: int) -> None:
    import contextlib

    import uvicorn
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    from starlette.applications import Starlette
    from starlette.routing import Mount

    manager = StreamableHTTPSessionManager(app=server, stateless=True)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        async with manager.run():
            yield

    app = Starlette(routes=[Mount("/mcp", app=manager.handle_request)], lifespan=lifespan)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bad", action="store_true")
    parser.add_argument("--http", type=int)
    opts = parser.parse_args()
    server = build(opts.bad)
    if opts.http:
        serve_http(server, opts.http)
    else:
        anyio.run(serve_stdio, server)
    sys.exit(0)


if __name__ == "__main__":
    main()
