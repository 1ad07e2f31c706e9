"""Calls `payload["tool"]` with `payload["args"]` and returns the result or the structured
refusal. With `crash_once` naming a file that does not exist yet, it creates the file and dies
right after the tool call: the run is cut short after its side effect, and redelivered."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from langgraph.graph import END, START, StateGraph

from agentd.worker import AgentContext, ToolCallFailed


def build(ctx: AgentContext) -> Any:
    async def call(state: dict[str, Any]) -> dict[str, Any]:
        try:
            result = await ctx.call_tool(state["tool"], state["args"])
        except ToolCallFailed as exc:
            return {"error": exc.error}
        return {"result": result, "crash_once": state.get("crash_once")}

    def maybe_crash(state: dict[str, Any]) -> dict[str, Any]:
        marker = state.pop("crash_once", None)
        if marker and not Path(marker).exists():
            Path(marker).touch()
            os._exit(1)  # after the side effect, before the run completes
        return state

    builder = StateGraph(dict)
    builder.add_node("call", call)
    builder.add_node("maybe_crash", maybe_crash)
    builder.add_edge(START, "call")
    builder.add_edge("call", "maybe_crash")
    builder.add_edge("maybe_crash", END)
    return builder.compile()
