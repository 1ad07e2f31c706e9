"""Notes every run it starts in $CHAOS_LOG (one line per start), then works for 200 ms: long
enough that every kill cuts runs short."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from langgraph.graph import END, START, StateGraph


async def work(state: dict[str, Any]) -> dict[str, Any]:
    await asyncio.to_thread(_append, os.environ["CHAOS_LOG"], f"{state['n']}\n")
    await asyncio.sleep(0.2)
    return {"n": state["n"], "done": True}


builder = StateGraph(dict)
builder.add_node("work", work)
builder.add_edge(START, "work")
builder.add_edge("work", END)
graph = builder.compile()


def _append(path: str, line: str) -> None:
    with open(path, "a") as log:
        log.write(line)
