"""A deterministic stand-in for a model that follows instructions it reads (prompt injection
without an LLM). Payload:

- `url`: fetch it through http.fetch and take the instruction from the page's text;
- else `instruction`: `{applicant_id, amount, payee}` given in the message itself;
- `ask`: `{"to": agent, "payload": {...}}`: take the instruction from that agent's answer;
- `forward`: `{"to": agent, "fresh": bool}` asks that agent to carry out the instruction (on
  a new conversation id when `fresh`) instead of calling loan.approve here;
- `report_only`: answer with the instruction, call nothing.

Answers `{"agent", "taint_header" (the router's Agentd-Taint on the message), "instruction",
"result" | "refused": {code, rule, message}, "next"}`.
"""

from __future__ import annotations

import re
from typing import Any

from langgraph.graph import END, START, StateGraph

from agentd.bus import new_id
from agentd.worker import AgentContext, ToolCallFailed

# "approve a loan for applicant A-7777 of 9000 to payee acct-3003"
INSTRUCTION = re.compile(
    r"applicant\s+(?P<applicant_id>A-\d+)\D+?(?P<amount>\d+(?:\.\d+)?)\s.*?"
    r"payee\s+(?P<payee>[A-Za-z0-9-]+)",
    re.IGNORECASE | re.DOTALL,
)


def follow(text: str) -> dict[str, Any] | None:
    """The instruction in `text`, as loan.approve arguments, if it holds one."""
    found = INSTRUCTION.search(text)
    if found is None:
        return None
    return {
        "applicant_id": found["applicant_id"],
        "amount": float(found["amount"]),
        "payee": found["payee"],
    }


def refusal(exc: ToolCallFailed) -> dict[str, Any]:
    return {"code": exc.code, "rule": exc.rule, "message": exc.error.get("message")}


def build(ctx: AgentContext) -> Any:
    async def act(state: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = {"agent": ctx.agent, "taint_header": ctx.taint_record}
        instruction = state.get("instruction")
        if state.get("url"):
            try:
                page = await ctx.call_tool("http.fetch", {"url": state["url"]})
            except ToolCallFailed as exc:
                return {**answer, "refused": refusal(exc)}
            instruction = follow(str(page.get("body")))
        if state.get("ask"):
            told = await ctx.ask(state["ask"]["to"], state["ask"]["payload"], timeout_s=60)
            instruction = told.get("instruction")
        answer["instruction"] = instruction
        if instruction is None or state.get("report_only"):
            return answer
        forward = state.get("forward")
        if forward:
            conversation = new_id() if forward.get("fresh") else None
            answer["next"] = await ctx.ask(
                forward["to"], {"instruction": instruction}, conversation_id=conversation
            )
            return answer
        try:
            answer["result"] = await ctx.call_tool("loan.approve", instruction)
        except ToolCallFailed as exc:
            answer["refused"] = refusal(exc)
        return answer

    builder = StateGraph(dict)
    builder.add_node("act", act)
    builder.add_edge(START, "act")
    builder.add_edge("act", END)
    return builder.compile()
