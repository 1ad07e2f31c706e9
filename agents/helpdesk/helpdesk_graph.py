"""The help desk: a prebuilt ReAct agent (`create_agent`) over plain @tools and an MCP tool.

Written as the LangGraph tutorial writes an agent, plus the two lines agentd adds (docs/agents.md,
"From a LangGraph tutorial to a governed agent"):

- `build(ctx)` instead of a module-level graph, because the refund policy is a tool of the
  refunds MCP server that the daemon mounts ([tools.mcp.refunds]); `ctx.tools()` hands it over
  as a LangChain tool with the server's own name, description and JSON schema;
- nothing else. `create_agent` is LangChain's prebuilt ReAct loop (LangGraph's
  `create_react_agent` is deprecated in its favour); `lookup_order` and `issue_refund` are
  ordinary `@tool` functions; the worker sends every call of every LangChain tool through the
  tool gateway (policy.csv, the cap and the approval threshold in constraints.toml,
  limits.toml, `tool.*` records, `execute_tool` spans), and ChatOpenAI reaches the LLM gateway
  through OPENAI_BASE_URL / OPENAI_API_KEY.

The procedure (look the order up, read the policy, refund, answer) is what a help desk does. A
middleware (`FollowTheProcedure`) makes every tool strict and, with
`HELPDESK_TOOL_CHOICE=guided` (agent.toml), names the tool the procedure needs next
(`tool_choice`), so even the tiny random-weight CPU model makes valid calls; `auto` lets a
real model choose.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool, ToolException, tool
from pydantic import Field

ORDERS: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).with_name("orders.json")).read_text()
)
PROMPT = (
    "You are the help desk of an online store. To answer a refund request: look the order up, "
    "read the refund policy for its category, days since delivery and total, then issue a "
    "refund of at most the policy's max_refund, and tell the customer what happened."
)
POLICY_TOOL = "refund_policy"
"""The refunds MCP server's tool (the gateway names it `refunds.refund_policy`)."""

OrderId = Annotated[str, Field(min_length=6, max_length=6, description="e.g. A-1002")]


@tool
def lookup_order(order_id: OrderId) -> dict[str, Any]:
    """Look up an order by its id: customer, item, category, total (EUR) and days since it was
    delivered."""
    order = ORDERS.get(order_id)
    if order is None:
        raise ToolException(f"no order {order_id!r}; order ids look like A-1002")
    return {"order_id": order_id, **order}


@tool
def issue_refund(
    order_id: OrderId,
    amount: Annotated[float, Field(gt=0, le=100_000, description="EUR")],
    reason: Literal["damaged", "late", "not_as_described", "changed_mind"],
) -> dict[str, Any]:
    """Refund `amount` EUR of an order to the customer's original payment method."""
    order = ORDERS.get(order_id)
    if order is None:
        raise ToolException(f"no order {order_id!r}")
    if amount > order["total"]:
        raise ToolException(f"{amount} EUR is more than order {order_id}'s total {order['total']}")
    refund = {
        "refund_id": "R-" + uuid.uuid4().hex[:10],
        "order_id": order_id,
        "amount": round(amount, 2),
        "reason": reason,
        "at": time.time(),
    }
    # the side effect: a line in the refunds ledger (the replica's scratch folder by default)
    with open(_ledger_path(), "a", encoding="utf-8") as ledger:
        ledger.write(json.dumps(refund) + "\n")
    return {**refund, "status": "issued"}


def _ledger_path() -> Path:
    explicit = os.environ.get("HELPDESK_REFUNDS_LEDGER")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("AGENTD_SCRATCH_DIR", ".")) / "refunds.jsonl"


for _tool in (lookup_order, issue_refund):
    _tool.handle_tool_error = True  # a ToolException reaches the model as an error ToolMessage


def policy_tools(mounted: Sequence[BaseTool]) -> list[BaseTool]:
    """The refunds server's tool among the mounted ones (however the adapter spells the server
    prefix: `refunds.refund_policy`, `refunds_refund_policy` or `refund_policy`)."""
    found = [t for t in mounted if t.name.split(".")[-1].endswith(POLICY_TOOL)]
    if not found:
        names = sorted(t.name for t in mounted)
        raise LookupError(
            f"the help desk needs the refunds MCP server's {POLICY_TOOL!r} tool; mounted: {names}"
            " (mount it with [tools.mcp.refunds] in agentd.toml and allow it in policy.csv)"
        )
    return found[:1]


def next_tool(messages: Sequence[BaseMessage], procedure: Sequence[str]) -> str | None:
    """The procedure's first tool the model has not called since the customer's last message;
    None once every step ran (then the model answers)."""
    start = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=0)
    called = {c["name"] for m in messages[start:] if isinstance(m, AIMessage) for c in m.tool_calls}
    return next((name for name in procedure if name not in called), None)


class FollowTheProcedure(AgentMiddleware[Any, Any]):
    """Strict tool schemas on every model call and, when guided, `tool_choice` naming the next
    step of the procedure (then "none": the model answers)."""

    def __init__(self, procedure: Sequence[str], *, guided: bool) -> None:
        super().__init__()
        self.procedure = list(procedure)
        self.guided = guided

    def _steer(self, request: ModelRequest[Any]) -> ModelRequest[Any]:
        settings = {**request.model_settings, "strict": True}
        if not self.guided:
            return request.override(model_settings=settings)
        step = next_tool(request.messages, self.procedure)
        return request.override(tool_choice=step or "none", model_settings=settings)

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResponse[Any]:
        return handler(self._steer(request))

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResponse[Any]:
        return await handler(self._steer(request))


def build(ctx: Any, *, model: BaseChatModel | None = None) -> Runnable[Any, Any]:
    """The graph; `model` replaces ChatOpenAI (tests script it)."""
    tools: list[BaseTool] = [lookup_order, *policy_tools(ctx.tools()), issue_refund]
    if model is None:
        from langchain_openai import ChatOpenAI

        # the pool's name is the model's name at the LLM gateway (OPENAI_BASE_URL)
        model = ChatOpenAI(model=os.environ.get("HELPDESK_MODEL", "tiny"), max_tokens=256)
    guided = os.environ.get("HELPDESK_TOOL_CHOICE", "guided") == "guided"
    procedure = FollowTheProcedure([t.name for t in tools], guided=guided)
    return create_agent(model, tools, system_prompt=PROMPT, middleware=[procedure], name="helpdesk")
