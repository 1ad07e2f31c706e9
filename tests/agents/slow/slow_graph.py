"""Works for 100 ms and returns its input."""

from __future__ import annotations

import asyncio
from typing import Any

from langgraph.graph import END, START, StateGraph


async def work(state: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0.1)
    return dict(state)


builder = StateGraph(dict)
builder.add_node("work", work)
builder.add_edge(START, "work")
builder.add_edge("work", END)
graph = builder.compile()
