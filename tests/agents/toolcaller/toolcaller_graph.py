"""Calls loan.approve (a real side effect), then, the first time only, dies before the run ends:
the message is redelivered and the rerun must get the stored result, not pay twice."""

from __future__ import annotations

import os
from typing import Any, TypedDict

import anyio
from langgraph.graph import END, START, StateGraph

from agentd.worker import AgentContext


class Loan(TypedDict, total=False):
    applicant_id: str
    amount: float
    payee: str
    crash_marker: str
    confirmation: str
    pid: int


def build(ctx: AgentContext) -> Any:
    async def pay(state: Loan) -> Loan:
        loan = {"applicant_id": state["applicant_id"], "amount": state["amount"]}
        receipt = await ctx.call_tool("loan.approve", {**loan, "payee": state["payee"]})
        marker = anyio.Path(state["crash_marker"])
        if not await marker.exists():
            await marker.write_text(f"{os.getpid()}\n")
            os._exit(17)  # after the side effect, before the run is recorded and acked
        return {"confirmation": receipt["confirmation"], "pid": os.getpid()}

    builder = StateGraph(Loan)
    builder.add_node("pay", pay)
    builder.add_edge(START, "pay")
    builder.add_edge("pay", END)
    return builder.compile()
