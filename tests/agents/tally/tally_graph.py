"""Appends the payload's items to the conversation's list; each run also notes $TALLY_HOST.

The lists grow only through the checkpointer: without the conversation's earlier state a run
sees just its own items.
"""

from __future__ import annotations

import operator
import os
from typing import Annotated, TypedDict

from langgraph.graph import END, START, StateGraph


class Tally(TypedDict, total=False):
    items: Annotated[list[str], operator.add]
    hosts: Annotated[list[str], operator.add]


def note_host(state: Tally) -> Tally:
    return {"hosts": [os.environ.get("TALLY_HOST", "?")]}


builder = StateGraph(Tally)
builder.add_node("note_host", note_host)
builder.add_edge(START, "note_host")
builder.add_edge("note_host", END)
graph = builder.compile()
