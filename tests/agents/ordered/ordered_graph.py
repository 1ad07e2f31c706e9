"""Sleeps a random few ms (so conversations interleave), then appends (conversation, seq) to
$ORDER_LOG."""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

from langgraph.graph import END, START, StateGraph


async def note(state: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(random.uniform(0, 0.01))
    await asyncio.to_thread(
        _append, os.environ["ORDER_LOG"], f"{state['conversation']} {state['seq']}\n"
    )
    return state


builder = StateGraph(dict)
builder.add_node("note", note)
builder.add_edge(START, "note")
builder.add_edge("note", END)
graph = builder.compile()


def _append(path: str, line: str) -> None:
    with open(path, "a") as log:
        log.write(line)
