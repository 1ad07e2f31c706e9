"""Answers with the greeting it was spawned with."""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph

from agentd.worker import AgentContext


def build(ctx: AgentContext) -> Any:
    def greet(state: dict[str, Any]) -> dict[str, Any]:
        return {"text": f"{ctx.params['greeting']}, {state['name']}", "agent": ctx.agent}

    builder = StateGraph(dict)
    builder.add_node("greet", greet)
    builder.add_edge(START, "greet")
    builder.add_edge("greet", END)
    return builder.compile()
