"""A messages graph: `note` records the question, then `answer` fails the first time for each
conversation ($FLAKY_DIR/<hash>: a transient error, as a model server restarting) and works the
next. A retry that went on from its checkpoint runs `answer` only, with the user's message once."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import anyio
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, MessagesState, StateGraph


def note(state: MessagesState) -> dict[str, Any]:
    return {"messages": [AIMessage("let me think")]}


async def answer(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
    thread = str(config["configurable"]["thread_id"])
    marker = anyio.Path(os.environ["FLAKY_DIR"]) / hashlib.sha1(thread.encode()).hexdigest()
    if not await marker.exists():
        await marker.write_text("failed once\n")
        raise ConnectionError("the model server is restarting")
    asked = [m for m in state["messages"] if m.type == "human"]
    return {"messages": [AIMessage(f"answered {asked[-1].content!r} ({len(asked)} asked)")]}


builder = StateGraph(MessagesState)
builder.add_node("note", note)
builder.add_node("answer", answer)
builder.add_edge(START, "note")
builder.add_edge("note", "answer")
builder.add_edge("answer", END)
graph = builder.compile()
