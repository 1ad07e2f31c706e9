"""Spawns an instance of `child` with the request's params and asks it for an answer."""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph

from agentd.worker import AgentContext


def build(ctx: AgentContext) -> Any:
    async def delegate(state: dict[str, Any]) -> dict[str, Any]:
        child = await ctx.spawn("child", {"greeting": state["greeting"]})
        answer = await ctx.ask(child, {"name": state["name"]}, timeout_s=30)
        return {"child": child, "answer": answer, "run": ctx.run_id}

    builder = StateGraph(dict)
    builder.add_node("delegate", delegate)
    builder.add_edge(START, "delegate")
    builder.add_edge("delegate", END)
    return builder.compile()
