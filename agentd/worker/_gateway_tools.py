"""The gateway's tools as LangChain tools: what a graph binds to its model and hands to ToolNode.

Before the graph loads, the worker asks the tool gateway for this agent's catalog on
`agentd.tools.<agent>` (NATS permissions: a replica may ask only under its own name): the tools
its agent spec lists, each with its real name, description and JSON schema (a tools/ tool's or
an MCP server's). Each becomes a `GatewayTool`, a `StructuredTool` whose `args_schema` is that
schema and whose coroutine is `ctx.call_tool(name, args, call_id=<the model's tool call id>)`:
the call is decided, limited, approved, recorded and traced by the gateway like any other, and
its idempotency key is the model's call id, so a retried run that repeats a call gets the
stored result (and ToolNode's parallel calls are keyed each on its own id). A refusal
(`ToolCallFailed`) reaches the model as a ToolMessage with `status="error"`, and the run goes
on. A graph takes them as `ctx.tools()` in a `build(ctx)` factory, or as `gateway_tools()`
at module import.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from langchain_core.tools import StructuredTool, ToolException

if TYPE_CHECKING:
    from agentd.worker._context import AgentContext

__all__ = ["GATEWAY_METADATA", "GatewayTool", "gateway_tools", "proxy_tools"]

GATEWAY_METADATA = "agentd_gateway"
"""`tool.metadata[GATEWAY_METADATA]` is True on every proxy: already governed by the gateway."""

_CALL_ID = "_agentd_tool_call_id"
_replica: AgentContext | None = None


class GatewayTool(StructuredTool):
    """A tool the gateway runs. LangChain hands a tool its call id only through
    `_to_args_and_kwargs` (`InjectedToolCallId` needs a pydantic schema; this one is the
    gateway's JSON schema), so it is passed on from there to the coroutine."""

    def _to_args_and_kwargs(
        self, tool_input: str | dict[str, Any], tool_call_id: str | None
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args, kwargs = super()._to_args_and_kwargs(tool_input, tool_call_id)
        return args, {**kwargs, _CALL_ID: tool_call_id}


def proxy_tools(ctx: AgentContext, catalog: list[dict[str, Any]]) -> list[GatewayTool]:
    """A `GatewayTool` for each entry of the gateway's catalog (name, description, schema)."""
    return [_proxy(ctx, entry) for entry in catalog]


def _proxy(ctx: AgentContext, entry: dict[str, Any]) -> GatewayTool:
    name = str(entry["name"])

    async def call(**kwargs: Any) -> str:
        from agentd.worker._context import ToolCallFailed

        call_id = _unique_in_run(ctx, kwargs.pop(_CALL_ID, None))
        try:
            result = await ctx.call_tool(name, kwargs, call_id=call_id)
        except ToolCallFailed as exc:  # to the model as a ToolMessage with status "error"
            raise ToolException(str(exc)) from exc
        return result if isinstance(result, str) else json.dumps(result)

    coroutine: Callable[..., Awaitable[str]] = call
    return GatewayTool(
        name=name,
        description=str(entry.get("description") or name),
        args_schema=dict(entry["schema"]),
        coroutine=coroutine,
        metadata={GATEWAY_METADATA: True},
        handle_tool_error=True,
    )


def _unique_in_run(ctx: AgentContext, call_id: str | None) -> str | None:
    """The model's call id as the call's key; a second use of the same id in one run (a model
    whose ids repeat across turns) gets `#2`, and so on: in the same order on a rerun, so the
    keys stay stable."""
    run = ctx.run
    if call_id is None or run is None:
        return call_id
    uses = run.model_call_ids[call_id] = run.model_call_ids.get(call_id, 0) + 1
    return call_id if uses == 1 else f"{call_id}#{uses}"


def install(ctx: AgentContext) -> None:
    """Make `ctx` the replica's context for `gateway_tools()` (the worker, before the graph
    module is imported)."""
    global _replica
    _replica = ctx


def gateway_tools() -> list[GatewayTool]:
    """This agent's gateway tools (the tools its agent spec lists), for a graph module that
    builds its graph at import: `tools = gateway_tools()`. The same as `ctx.tools()`.

    Raises RuntimeError outside an agentd replica (there is no gateway to ask)."""
    if _replica is None:
        raise RuntimeError(
            "gateway_tools() works inside an agentd replica (the worker fetches the catalog "
            "before it imports the graph); in a test, build the graph with a factory instead"
        )
    return _replica.tools()


async def fetch_catalog(nc: Any, subject: str, *, wait_s: float = 15.0) -> list[dict[str, Any]]:
    """Ask the gateway for this agent's catalog on `subject` (retried while no gateway
    answers, up to `wait_s`); the entries, or `AgentdError` saying why not."""
    import anyio
    import nats.errors

    from agentd.errors import AgentdError

    deadline = anyio.current_time() + wait_s
    while True:
        try:
            reply = await nc.request(subject, b"{}", timeout=5.0)
            break
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError, TimeoutError) as exc:
            if anyio.current_time() > deadline:
                raise AgentdError(
                    f"no tool catalog on {subject} within {wait_s:g}s ({exc!r}): is the tool "
                    "gateway running?"
                ) from None
            await anyio.sleep(0.2)
    answer = json.loads(reply.data)
    if not answer.get("ok"):
        raise AgentdError(f"the tool gateway refused the catalog: {answer.get('error')}")
    missing = answer.get("missing") or []
    if missing:
        import logging

        logging.getLogger("agentd.worker").warning(
            "tools in the agent spec the gateway does not offer (yet): %s", ", ".join(missing)
        )
    tools: list[dict[str, Any]] = answer.get("tools") or []
    return tools
