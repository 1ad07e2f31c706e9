"""One hop of a conversation across agents: call `payload["tool"]` with `payload["args"]` (if
given; a refusal is an answer too), then `ask` `payload["next"]["to"]` with
`payload["next"]["payload"]` (if given), and answer with both."""

from __future__ import annotations

from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

from agentd.worker import AgentContext, ToolCallFailed


class Hop(TypedDict, total=False):
    tool: str
    args: dict[str, Any]
    next: dict[str, Any]
    memo: str
    # the answer
    agent: str
    run: str | None
    result: Any
    refused: str


def build(ctx: AgentContext) -> Any:
    async def hop(state: Hop) -> Hop:
        answer: Hop = {"agent": ctx.agent, "run": ctx.run_id}
        if state.get("tool"):
            try:
                answer["result"] = await ctx.call_tool(state["tool"], state.get("args") or {})
            except ToolCallFailed as exc:
                answer["refused"] = exc.code
        following = state.get("next")
        if following:
            answer["next"] = await ctx.ask(following["to"], following["payload"], timeout_s=30)
        return answer

    builder = StateGraph(Hop)
    builder.add_node("hop", hop)
    builder.add_edge(START, "hop")
    builder.add_edge("hop", END)
    return builder.compile()
