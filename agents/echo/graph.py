"""The echo agent: one LangGraph node that returns its input unchanged."""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph


def echo(state: dict[str, Any]) -> dict[str, Any]:
    return dict(state)


builder = StateGraph(dict)
builder.add_node("echo", echo)
builder.add_edge(START, "echo")
builder.add_edge("echo", END)
graph = builder.compile()
