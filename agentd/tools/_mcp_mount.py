"""One mounted MCP server: a session kept open to it, and its tools in the registry.

`McpMount.run` connects (the stdio server's socket, or its URL), initializes an MCP session
through the official SDK, lists the tools and mounts each as the registry entry
`<server>.<tool>` (`McpToolSpec`: schema = the server's input schema, closed and checked
strict), then holds the session until the server goes away; then it connects again and lists
again (a restarted server may offer other tools; so does a `tools/list_changed`
notification). A call finds the current session; a call in
flight when the server dies fails with a retryable `ToolError` naming the server, and the next
call, once the restarted server has answered, works.

Problems with what a server offers (a malformed or non-strict schema, a name that is not a tool
name, a name another source holds) leave that tool out with an error naming the server and the
tool; its other tools are served.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, cast

import anyio
from anyio.abc import TaskStatus
from mcp import ClientSession, McpError
from mcp.client.streamable_http import streamablehttp_client
from mcp.types import (
    CONNECTION_CLOSED,
    CallToolResult,
    ErrorData,
    ServerNotification,
    Tool,
    ToolListChangedNotification,
)
from pydantic import JsonValue

from agentd.config import TOOL_NAME, McpServerConfig
from agentd.errors import ToolError
from agentd.tools._mcp_schema import JsonArguments, McpToolSpec, SchemaProblem, strict_schema
from agentd.tools._mcp_transport import Streams, connect_socket, header_values, socket_transport
from agentd.tools._registry import ToolRegistry

__all__ = [
    "Connector",
    "McpMount",
    "http_connector",
    "mcp_connector",
    "result_json",
    "socket_connector",
]

log = logging.getLogger("agentd.tools")

Connector = Callable[[Callable[[], None]], AbstractAsyncContextManager[Streams]]
"""Opens a transport; the argument is called when the server's end goes away."""

# how long to wait for a server's answer to initialize / list_tools
HANDSHAKE_TIMEOUT_S = 15.0
RETRY_INITIAL_S = 0.05
RETRY_MAX_S = 2.0


def socket_connector(address: str) -> Connector:
    """A stdio server behind `_mcp_launch.py`'s socket (retried while it is being started)."""

    @contextlib.asynccontextmanager
    async def connect(on_closed: Callable[[], None]) -> AsyncIterator[Streams]:
        stream = await connect_socket(address)
        async with socket_transport(stream, on_closed) as streams:
            yield streams

    return connect


def http_connector(url: str, headers: dict[str, str]) -> Connector:
    """A streamable HTTP server, with `headers` on every request."""

    @contextlib.asynccontextmanager
    async def connect(on_closed: Callable[[], None]) -> AsyncIterator[Streams]:
        try:
            async with streamablehttp_client(url, headers=headers) as (read, write, _):
                yield read, write
        finally:
            on_closed()

    return connect


class McpMount:
    """Keeps server `name` mounted in `registry` (source `mcp:<name>`) until cancelled."""

    def __init__(
        self,
        name: str,
        config: McpServerConfig,
        registry: ToolRegistry,
        connector: Connector,
        *,
        rank: int = 0,
    ) -> None:
        self.name = name
        self.config = config
        self.source = f"mcp:{name}"
        self._registry = registry
        self._connector = connector
        self._rank = rank
        self._session: ClientSession | None = None
        self._broken = anyio.Event()
        self._in_flight: set[anyio.CancelScope] = set()
        self._relist = anyio.Event()
        self.ready = anyio.Event()
        """Set once the server's tools were first listed and mounted."""
        self.problems: list[str] = []
        """What the last listing refused, each naming the server and the tool."""
        self.sessions = 0
        """Sessions opened so far (1 + restarts seen)."""

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        delay = RETRY_INITIAL_S
        while True:
            self._broken = anyio.Event()
            try:
                async with (
                    self._connector(self._broken.set) as (read, write),
                    ClientSession(read, write, message_handler=self._on_message) as session,
                ):
                    with anyio.fail_after(HANDSHAKE_TIMEOUT_S):
                        await session.initialize()
                        tools = await self._list(session)
                    self.sessions += 1
                    self._mount(session, tools)
                    delay = RETRY_INITIAL_S
                    # the server says its tools changed: list and mount them again
                    while await _first(self._relist, self._broken):
                        self._relist = anyio.Event()
                        with anyio.fail_after(HANDSHAKE_TIMEOUT_S):
                            tools = await self._list(session)
                        self._mount(session, tools)
                    log.warning("MCP server %s went away; connecting again", self.name)
                    self._session = None
                    self._fail_in_flight()
            except (OSError, TimeoutError, McpError, anyio.BrokenResourceError) as exc:
                log.debug("MCP server %s: not reachable yet: %r", self.name, exc)
            except Exception as exc:  # one bad server never stops the daemon
                first: BaseException = exc
                if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
                    first = exc.exceptions[0]
                log.warning("MCP server %s: session ended: %r", self.name, first)
            finally:
                self._session = None
                self._fail_in_flight()
            await anyio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, ServerNotification) and isinstance(
            message.root, ToolListChangedNotification
        ):
            self._relist.set()

    def _fail_in_flight(self) -> None:
        for scope in list(self._in_flight):
            scope.cancel()
        self._in_flight.clear()

    async def _list(self, session: ClientSession) -> list[Tool]:
        tools: list[Tool] = []
        cursor: str | None = None
        while True:
            page = await session.list_tools(cursor=cursor)
            tools += page.tools
            cursor = page.nextCursor
            if not cursor:
                return tools

    def _mount(self, session: ClientSession, tools: list[Tool]) -> None:
        specs, problems = [], []
        for tool in tools:
            where = f"MCP server {self.name}: tool {tool.name!r}"
            name = f"{self.name}.{tool.name}"
            if not TOOL_NAME.match(name):
                problems.append(
                    f"{where}: {name!r} is not a tool name (letters, digits, _ and -, "
                    "dot-separated); left out"
                )
                continue
            try:
                schema = strict_schema(tool.inputSchema)
            except SchemaProblem as exc:
                problems.append(f"{where}: {exc}; left out")
                continue
            specs.append(
                McpToolSpec(
                    name=name,
                    description=tool.description or "",
                    args_model=JsonArguments,
                    target=functools.partial(self.call, tool.name),
                    kind="mcp",
                    is_async=True,
                    isolated=False,
                    timeout_s=self.config.timeout_s,
                    file=Path(f"[tools.mcp.{self.name}]"),
                    attr=tool.name,
                    trust=self.config.trust,
                    server=self.name,
                    remote_name=tool.name,
                    input_schema=schema,
                    read_only=bool(tool.annotations and tool.annotations.readOnlyHint),
                    idempotent=bool(tool.annotations and tool.annotations.idempotentHint),
                )
            )
        problems += self._registry.mount(self.source, specs, rank=self._rank)
        self.problems = problems
        for problem in problems:
            log.error("%s", problem)
        self._session = session
        mounted = sorted(s.name for s in specs if self._registry.get(s.name) is s)
        log.info("MCP server %s: tools %s", self.name, ", ".join(mounted) or "none")
        self.ready.set()

    async def call(self, tool: str, args: dict[str, Any]) -> JsonValue:
        """Call `tool` (its name on the server) with validated `args`; its result as JSON, or
        `ToolError` (retryable when the server went away; not when the tool said error)."""
        session = self._session
        if session is None:
            raise ToolError(
                f"MCP server {self.name} is not connected (starting or restarting); try again",
                retryable=True,
            )
        try:
            # the session's end cancels this scope: a call in flight when the server dies
            # fails now, not at its timeout
            with anyio.CancelScope() as scope:
                self._in_flight.add(scope)
                try:
                    result = await session.call_tool(tool, args)
                finally:
                    self._in_flight.discard(scope)
            if scope.cancelled_caught:
                raise McpError(ErrorData(code=CONNECTION_CLOSED, message="connection lost"))
        except McpError as exc:
            if exc.error.code == CONNECTION_CLOSED:
                self._broken.set()
                raise ToolError(
                    f"MCP server {self.name} went away during the call of {tool} (it is "
                    "restarted; try again)",
                    retryable=True,
                ) from None
            raise ToolError(f"MCP server {self.name}: {tool}: {exc.error.message}") from None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            self._broken.set()
            raise ToolError(
                f"MCP server {self.name} is unreachable ({exc!r}); try again", retryable=True
            ) from None
        return result_json(self.name, tool, result)


async def _first(event: anyio.Event, other: anyio.Event) -> bool:
    """Wait until either is set; True when `event` is (and `other` is not)."""
    async with anyio.create_task_group() as tg:

        async def wait(e: anyio.Event) -> None:
            await e.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(wait, event)
        tg.start_soon(wait, other)
    return event.is_set() and not other.is_set()


def result_json(server: str, tool: str, result: CallToolResult) -> JsonValue:
    """A call's result as JSON: its structured content when it has one, else the text of a
    single text block, else the content blocks; `ToolError` when the tool reports an error."""
    blocks = [b.model_dump(mode="json", by_alias=True, exclude_none=True) for b in result.content]
    if result.isError:
        text = " ".join(str(b.get("text", "")) for b in blocks).strip() or "no details"
        raise ToolError(f"MCP server {server}: {tool} failed: {text}")
    if result.structuredContent is not None:
        structured: JsonValue = result.structuredContent
        return structured
    if len(blocks) == 1 and blocks[0].get("type") == "text":
        text_value: JsonValue = blocks[0].get("text")
        return text_value
    return cast(JsonValue, blocks)


def mcp_connector(name: str, config: McpServerConfig, *, address: str | None) -> Connector:
    """The connector for server `name`: its launcher's socket (stdio) or its URL."""
    if config.url is not None:
        return http_connector(config.url, header_values(config.headers_env, name))
    assert address is not None
    return socket_connector(address)
