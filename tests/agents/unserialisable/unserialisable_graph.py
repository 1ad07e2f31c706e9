"""A graph whose state cannot be serialised for its checkpoint (a lock in it): a retry fails the
same way, after the same side effects ($UNSERIALISABLE_LOG gets a line per attempt)."""

from __future__ import annotations

import os
import threading
from typing import Any

from langgraph.graph import END, START, StateGraph


def hold(state: dict[str, Any]) -> dict[str, Any]:
    with open(os.environ["UNSERIALISABLE_LOG"], "a") as log:
        log.write("attempt\n")
    return {**state, "lock": threading.Lock()}


builder = StateGraph(dict)
builder.add_node("hold", hold)
builder.add_edge(START, "hold")
builder.add_edge("hold", END)
graph = builder.compile()
