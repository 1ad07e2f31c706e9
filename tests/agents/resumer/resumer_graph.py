"""A ReAct-shaped loop: a scripted model asks for `counter.bump` once, a hand-written tool node
calls it through the gateway with the model's tool call id, and the model answers with the
result. The first time ($RESUMER_KILL_MARKER absent) the replica SIGKILLs itself right after the
tool's side effect, before the run ends.

The model is deterministic in what it does but, like a served model, gives each tool call a fresh
id: only the checkpointed AIMessage keeps the id a rerun must repeat.
"""

from __future__ import annotations

import os
import signal
import uuid
from typing import Any

import anyio
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.graph import END, START, MessagesState, StateGraph

from agentd.worker import AgentContext


def model(state: MessagesState) -> dict[str, Any]:
    results = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    if results:
        return {"messages": [AIMessage(f"bumped to {results[-1].content}")]}
    call = {
        "name": "counter.bump",
        "args": {"path": os.environ["RESUMER_COUNTER"]},
        "id": f"call_{uuid.uuid4().hex[:12]}",
    }
    return {"messages": [AIMessage("", tool_calls=[call])]}


def route(state: MessagesState) -> str:
    last = state["messages"][-1]
    return "tools" if isinstance(last, AIMessage) and last.tool_calls else END


def build(ctx: AgentContext) -> Any:
    async def tools(state: MessagesState) -> dict[str, Any]:
        last = state["messages"][-1]
        assert isinstance(last, AIMessage)
        answers = []
        for call in last.tool_calls:
            result = await ctx.call_tool(call["name"], call["args"], call_id=call["id"])
            answers.append(ToolMessage(str(result), tool_call_id=call["id"]))
        marker = anyio.Path(os.environ["RESUMER_KILL_MARKER"])
        if not await marker.exists():
            await marker.write_text(f"{os.getpid()}\n")
            os.kill(os.getpid(), signal.SIGKILL)  # after the side effect, before the checkpoint
        return {"messages": answers}

    builder = StateGraph(MessagesState)
    builder.add_node("model", model)
    builder.add_node("tools", tools)
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", route, ["tools", END])
    builder.add_edge("tools", "model")
    return builder.compile()
