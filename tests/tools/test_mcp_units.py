"""MCP tools as registry entries, without a daemon: strict schemas, strict validation, dot
collisions decided by rank, a real SDK server mounted through the launcher's socket, and the
LangChain proxies' call ids (the daemon tests run the same paths end to end)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from agentd.config import McpServerConfig
from agentd.errors import ToolError
from agentd.tools import (
    MCP_LAUNCHER,
    InvalidArguments,
    McpMount,
    McpToolSpec,
    SchemaProblem,
    ToolRegistry,
    mcp_connector,
    run_tool,
    strict_schema,
)
from agentd.tools._catalog import catalog_reply
from agentd.tools._mcp_schema import JsonArguments
from agentd.worker import RunInfo, ToolCallFailed
from agentd.worker._gateway_tools import proxy_tools

pytestmark = pytest.mark.anyio

SERVER = Path(__file__).with_name("mcp_server.py")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


OBJ = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def test_a_strict_schema_is_closed_at_every_level() -> None:
    nested = {
        "type": "object",
        "properties": {
            "who": {"type": "object", "properties": {"id": {"type": "string"}}},
            "tags": {"type": "array", "items": {"type": "object", "properties": {}}},
            "kind": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
    }
    closed = strict_schema(nested)
    assert closed["additionalProperties"] is False
    assert closed["properties"]["who"]["additionalProperties"] is False
    assert closed["properties"]["tags"]["items"]["additionalProperties"] is False
    assert "additionalProperties" not in nested  # the server's own dict is left alone


@pytest.mark.parametrize(
    ("schema", "why"),
    [
        ([1, 2], "malformed schema: a JSON object expected"),
        ({"type": "object", "properties": {"x": {"type": "nonsense"}}}, "malformed schema at"),
        ({"type": "string"}, 'the root must be {"type": "object"}'),
        ({"type": "object", "additionalProperties": True}, "allows additional properties"),
        (
            {"type": "object", "properties": {"m": {"type": "object", "additionalProperties": {}}}},
            "(root)/properties/m allows additional properties",
        ),
        ({"type": "object", "properties": {"x": {}}}, "(root)/properties/x says no type"),
        ({"type": "object", "properties": {"x": {"oneOf": [{"type": "string"}]}}}, "'oneOf'"),
        ({"type": "object", "patternProperties": {"^a": {"type": "string"}}}, "patternProperties"),
    ],
)
def test_schemas_strict_mode_cannot_express_are_refused_saying_where(schema: Any, why: str) -> None:
    with pytest.raises(SchemaProblem) as caught:
        strict_schema(schema)
    assert why in str(caught.value)


def test_deeply_nested_objects_are_not_strict() -> None:
    schema: dict[str, Any] = {"type": "object", "properties": {}}
    node = schema
    for _ in range(11):
        child: dict[str, Any] = {"type": "object", "properties": {}}
        node["properties"]["n"] = child
        node = child
    with pytest.raises(SchemaProblem, match="deeper than 10"):
        strict_schema(schema)


def spec(name: str, schema: dict[str, Any] | None = None, server: str = "s") -> McpToolSpec:
    return McpToolSpec(
        name=name,
        description="",
        args_model=JsonArguments,
        target=None,
        kind="mcp",
        is_async=True,
        isolated=False,
        timeout_s=None,
        file=Path(f"[tools.mcp.{server}]"),
        attr=name,
        server=server,
        remote_name=name.removeprefix(f"{server}."),
        input_schema=strict_schema(schema or OBJ),
    )


def test_arguments_are_validated_strictly_naming_each_field() -> None:
    tool = spec("s.add")
    assert tool.validate({"a": 3}).model_dump() == {"a": 3}
    with pytest.raises(InvalidArguments) as caught:
        tool.validate({"a": "3", "b": 1})
    assert caught.value.problems == [
        "b: not an argument of s.add",
        "a: '3' is not of type 'integer'",
    ] or sorted(caught.value.problems) == sorted(
        ["b: not an argument of s.add", "a: '3' is not of type 'integer'"]
    )
    with pytest.raises(InvalidArguments, match="a: required argument is missing"):
        tool.validate({})
    with pytest.raises(InvalidArguments, match="is not of type 'integer'"):
        tool.validate({"a": True})


def test_a_dot_collision_goes_to_the_source_that_ranks_first() -> None:
    registry = ToolRegistry()
    # server `a.b` (rank 1) answered first with tool `c`; then server `a` (rank 0), tool `b.c`
    late = spec("a.b.c", server="a.b")
    early = spec("a.b.c", server="a")
    assert registry.mount("mcp:a.b", [late], rank=1) == []
    problems = registry.mount("mcp:a", [early], rank=0)
    assert registry.get("a.b.c") is early
    assert problems == [
        "tool 'a.b.c' of mcp:a.b collides with 'a.b.c' of mcp:a, which ranks first "
        "(agentd.toml order); left out"
    ]
    # and the other way round: the later server is refused
    assert (
        "of mcp:a.b collides with 'a.b.c' of mcp:a" in registry.mount("mcp:a.b", [late], rank=1)[0]
    )
    assert registry.get("a.b.c") is early
    registry.unmount("mcp:a")
    assert registry.get("a.b.c") is None


def test_a_tools_folder_tool_always_keeps_its_name() -> None:
    registry = ToolRegistry.load(Path(__file__).parents[2] / "tools")
    own = registry.get("credit.score")
    problems = registry.mount("mcp:credit", [spec("credit.score", server="credit")], rank=-5)
    assert registry.get("credit.score") is own
    assert "collides with 'credit.score' of tools/" in problems[0]


def test_the_catalog_lists_the_agents_tools_and_names_the_missing() -> None:
    import json

    registry = ToolRegistry()
    registry.mount("mcp:s", [spec("s.add")])
    reply = json.loads(catalog_reply(registry, lambda a: ["s.add", "s.gone"], "alpha"))
    assert reply["tools"] == [{"name": "s.add", "description": "", "schema": spec("s.add").schema}]
    assert reply["missing"] == ["s.gone"]
    unknown = json.loads(catalog_reply(registry, lambda a: None, "nobody"))
    assert unknown["ok"] is False


async def test_a_real_server_is_mounted_and_called_through_the_launcher(tmp_path: Path) -> None:
    address = f"@agentd-test-{os.getpid()}-{tmp_path.name}"
    argv = [sys.executable, "-I", "-S", MCP_LAUNCHER, address, "--"]
    proc = await anyio.open_process(
        [*argv, sys.executable, str(SERVER), "--bad"], stdin=None, stdout=None, stderr=None
    )
    registry = ToolRegistry()
    config = McpServerConfig(command="python")
    mount = McpMount("s", config, registry, mcp_connector("s", config, address=address))
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(mount.run)
            with anyio.fail_after(20):
                await mount.ready.wait()
            assert {"s.echo", "s.add", "s.b.c"} <= set(registry.names)
            assert not {"s.malformed", "s.openmap"} & set(registry.names)
            assert any("'malformed': malformed schema" in p for p in mount.problems)
            add = registry.get("s.add")
            assert add is not None and add.schema["additionalProperties"] is False
            assert await run_tool(add, add.validate({"a": 2, "b": 5}), timeout_s=10) == {"sum": 7}
            grow = registry.get("s.grow")
            assert grow is not None
            await run_tool(grow, grow.validate({}), timeout_s=10)
            with anyio.fail_after(10):  # tools/list_changed: listed and mounted again
                while registry.get("s.grown1") is None:  # noqa: ASYNC110 (no event to wait on)
                    await anyio.sleep(0.02)
            assert mount.sessions == 1
            fail = registry.get("s.fail")
            assert fail is not None
            with pytest.raises(ToolError, match="MCP server s: fail failed"):
                await run_tool(fail, fail.validate({}), timeout_s=10)
            tg.cancel_scope.cancel()
    finally:
        proc.kill()
        await proc.wait()


async def test_the_launcher_turns_away_a_process_other_than_its_parent(tmp_path: Path) -> None:
    address = f"@agentd-test-peer-{os.getpid()}-{tmp_path.name}"
    errors = tmp_path / "stderr"
    launch = (
        f'"{sys.executable}" -I -S "{MCP_LAUNCHER}" "{address}" -- "{sys.executable}" "{SERVER}"'
    )
    # started by a shell that stays its parent: this process is not the launcher's parent
    with errors.open("wb") as err:
        proc = await anyio.open_process(
            ["sh", "-c", f"{launch}; exit 0"],
            stdin=None,
            stdout=None,
            stderr=err,
            start_new_session=True,
        )
    try:
        stream = None
        with anyio.fail_after(10):
            while stream is None:
                try:
                    stream = await anyio.connect_unix("\0" + address[1:])
                except OSError:
                    await anyio.sleep(0.05)
        async with stream:
            with anyio.fail_after(10):
                try:
                    data = await stream.receive()
                except (anyio.EndOfStream, OSError):
                    data = b""
        assert data == b""  # closed on us: no server behind it
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
    assert b"turned away a connection from pid" in errors.read_bytes()


class Calls:
    """Stands in for AgentContext.call_tool (the daemon test runs the real one)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any], str | None]] = []
        self.run = RunInfo("run-1", "msg-1", "conv-1", "someone")

    async def call_tool(
        self, name: str, args: dict[str, Any], *, call_id: str | None = None
    ) -> Any:
        self.seen.append((name, args, call_id))
        if name == "s.no":
            raise ToolCallFailed(name, {"code": "policy_denied", "rule": "policy.csv:1"})
        return {"echo": args}


async def test_toolnode_calls_reach_the_gateway_keyed_by_the_models_call_ids() -> None:
    ctx = Calls()
    catalog = [
        {"name": "s.add", "description": "Add.", "schema": strict_schema(OBJ)},
        {"name": "s.no", "description": "Refused.", "schema": strict_schema(OBJ)},
    ]
    tools = proxy_tools(ctx, catalog)  # type: ignore[arg-type]
    assert [t.metadata for t in tools] == [{"agentd_gateway": True}] * 2
    assert tools[0].args_schema == strict_schema(OBJ)
    calls = [
        {"name": "s.add", "args": {"a": 1}, "id": "call_1", "type": "tool_call"},
        {"name": "s.add", "args": {"a": 2}, "id": "call_2", "type": "tool_call"},
        {"name": "s.no", "args": {"a": 3}, "id": "call_3", "type": "tool_call"},
    ]
    graph = StateGraph(MessagesState)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "tools")
    compiled = graph.compile()
    out = await compiled.ainvoke({"messages": [AIMessage(content="", tool_calls=calls)]})
    messages = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert sorted(ctx.seen, key=lambda c: str(c[2])) == [
        ("s.add", {"a": 1}, "call_1"),
        ("s.add", {"a": 2}, "call_2"),
        ("s.no", {"a": 3}, "call_3"),
    ]
    by_id = {m.tool_call_id: m for m in messages}
    assert by_id["call_1"].content == '{"echo": {"a": 1}}' and by_id["call_1"].status == "success"
    assert by_id["call_3"].status == "error"
    assert "policy_denied (rule policy.csv:1)" in str(by_id["call_3"].content)


@pytest.mark.parametrize(
    ("toml", "why"),
    [
        ('[tools.mcp.x]\ncommand = "a"\nurl = "http://h/mcp"\n', "either command"),
        ("[tools.mcp.x]\ntrust = 'trusted'\n", "either command"),
        ('[tools.mcp.x]\nurl = "ftp://h"\n', "must start with http"),
        ('[tools.mcp.x]\nurl = "http://h/mcp"\nheaders_env = {A = "not a var"}\n', "headers_env"),
        ('[tools.mcp.x]\ncommand = "a"\nheaders_env = {A = "V"}\n', "only for an HTTP"),
        ('[tools.mcp.x]\nurl = "http://h/mcp"\nargs = ["a"]\n', "only for a stdio"),
        ('[tools.mcp."x y"]\ncommand = "a"\n', "server name"),
        ('[tools.mcp.x]\ncommand = "a"\ntrust = "maybe"\n', "trust"),
        ('[tools.mcp.x]\ncommand = "a"\nsecret = "s3cret"\n', "secret"),
    ],
)
def test_bad_mcp_config_is_one_error_naming_the_server(tmp_path: Path, toml: str, why: str) -> None:
    from agentd.config import load_config
    from agentd.errors import ConfigError

    path = tmp_path / "agentd.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert "tools.mcp" in text and why in text, text


def test_a_stdio_server_runs_in_the_config_files_folder(tmp_path: Path) -> None:
    from agentd.config import load_config

    path = tmp_path / "agentd.toml"
    path.write_text('[tools.mcp.r]\ncommand = "python"\nargs = ["srv.py"]\n')
    server = load_config(path).config.tools.mcp["r"]
    assert server.cwd == tmp_path.resolve() and server.transport == "stdio"
    assert server.trust == "untrusted"


async def test_a_model_that_repeats_a_call_id_gets_a_key_per_call() -> None:
    ctx = Calls()
    catalog = [{"name": "s.add", "description": "Add.", "schema": strict_schema(OBJ)}]
    (add,) = proxy_tools(ctx, catalog)  # type: ignore[arg-type]
    for a in (1, 2):  # two turns of a loop, the model naming both calls "call_0"
        call = {"name": "s.add", "args": {"a": a}, "id": "call_0", "type": "tool_call"}
        await add.ainvoke(call)
    assert [c[2] for c in ctx.seen] == ["call_0", "call_0#2"]
    await add.ainvoke({"a": 3})  # no tool call: call_tool numbers it
    assert ctx.seen[-1][2] is None
