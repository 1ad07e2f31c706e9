"""Calls `payload["tool"]` with `payload["args"]`; the result, or the structured refusal."""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph

from agentd.worker import AgentContext, ToolCallFailed


def build(ctx: AgentContext) -> Any:
    async def call(state: dict[str, Any]) -> dict[str, Any]:
        try:
            result = await ctx.call_tool(state["tool"], state["args"], call_id=state.get("call"))
        except ToolCallFailed as exc:
            return {"error": exc.error}
        return {"result": result}

    builder = StateGraph(dict)
    builder.add_node("call", call)
    builder.add_edge(START, "call")
    builder.add_edge("call", END)
    return builder.compile()
