"""A ToolNode graph over the gateway's tools, with no model: the payload's `calls` stand in for
a model's tool calls (`{"name", "args", "id"}`); the reply is the catalog and each ToolMessage.

`MODULE_TOOLS` is what `gateway_tools()` gave at import; `build(ctx)` uses `ctx.tools()`."""

from __future__ import annotations

from typing import Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langgraph.graph import END, START, StateGraph
from langgraph.prebuilt import ToolNode

from agentd.worker import AgentContext, gateway_tools

MODULE_TOOLS = gateway_tools()


class State(TypedDict, total=False):
    calls: list[dict[str, Any]]
    messages: list[AnyMessage]
    catalog: list[dict[str, Any]]
    results: list[dict[str, Any]]


def build(ctx: AgentContext) -> Any:
    tools = ctx.tools()

    def model(state: State) -> State:
        calls = [{**c, "type": "tool_call"} for c in state.get("calls", [])]
        return {"messages": [AIMessage(content="", tool_calls=calls)]}

    def report(state: State) -> State:
        results = [
            {
                "id": m.tool_call_id,
                "name": m.name,
                "content": m.content,
                "status": m.status,
            }
            for m in state.get("messages", [])
            if isinstance(m, ToolMessage)
        ]
        catalog = [
            {
                "name": t.name,
                "description": t.description,
                "schema": t.args_schema,
                "metadata": t.metadata,
                "module": t.name in {m.name for m in MODULE_TOOLS},
            }
            for t in tools
        ]
        return {"results": results, "catalog": catalog, "messages": []}

    builder = StateGraph(State)
    builder.add_node("model", model)
    builder.add_node("tools", ToolNode(tools))
    builder.add_node("report", report)
    builder.add_edge(START, "model")
    builder.add_edge("model", "tools")
    builder.add_edge("tools", "report")
    builder.add_edge("report", END)
    return builder.compile()
