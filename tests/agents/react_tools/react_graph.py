"""A LangGraph tutorial agent, unmodified: `create_react_agent` over two plain `@tool`s.

The chat model is scripted so the test is deterministic: the user's message is JSON saying
which tool calls the model makes (`{"calls": [[name, args], ...]}`, ids `call_0`, `call_1`, ...
in one AI message, so a ToolNode runs them in parallel); once it sees the tool messages it
answers with their contents. `crash_once` (a path) makes the replica die right after the tools
ran, the first time only. Every tool body appends to `counter` (a path), its side effect.
Nothing here imports agentd: the worker governs the tools by itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.prebuilt import create_react_agent


def _script(messages: Sequence[BaseMessage]) -> dict[str, Any]:
    first = next(m for m in messages if isinstance(m, HumanMessage))
    script: dict[str, Any] = json.loads(str(first.content))
    return script


def _side_effect(script_path: str | None, what: str) -> None:
    if script_path:
        with open(script_path, "a") as f:
            f.write(what + "\n")


COUNTER: dict[str, str | None] = {"path": None}


@tool
def find_order(order_id: str) -> str:
    """Look up an order by its id."""
    _side_effect(COUNTER["path"], f"lookup {order_id}")
    return f"order {order_id}: shipped, 120.00 EUR"


@tool
async def grant_refund(order_id: str, amount: float) -> str:
    """Refund `amount` of an order."""
    _side_effect(COUNTER["path"], f"refund {order_id} {amount}")
    return f"refunded {amount:.2f} on {order_id}"


@tool
def close_account(customer_id: str) -> str:
    """Close a customer's account (no policy rule allows it)."""
    _side_effect(COUNTER["path"], f"close {customer_id}")
    return "closed"


class ScriptedModel(BaseChatModel):
    """Emits the script's tool calls, then a final answer naming what the tools said."""

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        script = _script(messages)
        COUNTER["path"] = script.get("counter")
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if not results:
            calls = [
                {"name": name, "args": args, "id": f"call_{i}", "type": "tool_call"}
                for i, (name, args) in enumerate(script["calls"])
            ]
            message = AIMessage(content="", tool_calls=calls)
        else:
            crash = script.get("crash_once")
            if crash and not Path(crash).exists():
                Path(crash).write_text(f"{os.getpid()}\n")
                os._exit(17)  # after the tools ran, before the run is recorded and acked
            said = [f"{m.tool_call_id}={m.status}:{m.content}" for m in results]
            message = AIMessage(content=" | ".join(said))
        return ChatResult(generations=[ChatGeneration(message=message)])


graph = create_react_agent(ScriptedModel(), [find_order, grant_refund, close_account])
