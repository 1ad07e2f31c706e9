"""Raises on a poison payload until $POISON_FIX exists: a bug, then its fix."""

from __future__ import annotations

import os
from typing import Any

from langgraph.graph import END, START, StateGraph


def handle(state: dict[str, Any]) -> dict[str, Any]:
    if state.get("poison") and not os.path.exists(os.environ["POISON_FIX"]):
        raise ValueError("cannot digest poison")
    return {**state, "handled": True}


builder = StateGraph(dict)
builder.add_node("handle", handle)
builder.add_edge(START, "handle")
builder.add_edge("handle", END)
graph = builder.compile()
