"""The help-desk example's graph (agents/helpdesk) offline: the real refunds MCP server through
the SDK's stdio client and langchain-mcp-adapters (as `ctx.tools()` will hand its tool over),
the prebuilt ReAct agent, and a scripted chat model in place of ChatOpenAI that answers the tool
the graph names. What agentd adds around it (decisions, the cap, approvals, records) is
tests/test_helpdesk.py, through the daemon."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_mcp_adapters.client import MultiServerMCPClient
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from tests.harness import REPO

SERVER = REPO / "mcp_servers" / "refunds" / "server.py"
sys.path.insert(0, str(REPO / "agents" / "helpdesk"))
import helpdesk_graph  # noqa: E402


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class ScriptedModel(BaseChatModel):
    """Answers the tool the graph names in `tool_choice` with `args[tool]`; `choices` and
    `tools` keep what each call was given."""

    args: dict[str, dict[str, Any]]
    choices: list[Any] = []
    tools: list[list[dict[str, Any]]] = []

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        strict = kwargs.pop("strict", None)
        converted = [convert_to_openai_tool(t, strict=strict) for t in tools]
        return self.bind(tools=converted, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        choice = kwargs.get("tool_choice")
        self.choices.append(choice)
        self.tools.append(kwargs.get("tools") or [])
        if choice in (None, "none", "auto"):
            results = [str(m.content) for m in messages if isinstance(m, ToolMessage)]
            message = AIMessage(content="Done: " + " | ".join(results))
        else:
            call = {"name": choice, "args": self.args[choice], "id": f"call-{len(self.choices)}"}
            message = AIMessage(content="", tool_calls=[call])
        return ChatResult(generations=[ChatGeneration(message=message)])


class MountedTools:
    """Stands in for the worker's context: `tools()` as the daemon will offer them."""

    def __init__(self, tools: list[BaseTool]) -> None:
        self._tools = tools

    def tools(self) -> list[BaseTool]:
        return self._tools


async def refunds_tools() -> list[BaseTool]:
    client = MultiServerMCPClient(
        {"refunds": {"command": sys.executable, "args": [str(SERVER)], "transport": "stdio"}}
    )
    return await client.get_tools()


ARGS: dict[str, dict[str, Any]] = {
    "lookup_order": {"order_id": "A-1002"},
    "refund_policy": {"category": "electronics", "days_since_delivery": 12, "order_total": 349.0},
    "issue_refund": {"order_id": "A-1002", "amount": 349.0, "reason": "damaged"},
}


@pytest.mark.anyio
async def test_the_mcp_server_lists_its_tool_with_a_schema_and_answers() -> None:
    params = StdioServerParameters(command=sys.executable, args=[str(SERVER)])
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        [listed] = (await session.list_tools()).tools
        assert listed.name == "refund_policy" and "refund" in (listed.description or "")
        schema = listed.inputSchema
        assert schema["required"] == ["category", "days_since_delivery", "order_total"]
        assert schema["properties"]["category"]["enum"] == [
            "electronics",
            "apparel",
            "books",
            "grocery",
        ]
        answer = await session.call_tool("refund_policy", ARGS["refund_policy"])
        assert not answer.isError
        assert answer.structuredContent == {
            "category": "electronics",
            "eligible": True,
            "max_refund": 349.0,
            "window_days": 30,
            "policy": "30 days, full refund",
        }
        late = await session.call_tool(
            "refund_policy", {"category": "books", "days_since_delivery": 40, "order_total": 20}
        )
        assert late.structuredContent is not None and late.structuredContent["eligible"] is False
        bad = await session.call_tool(
            "refund_policy", {"category": "toys", "days_since_delivery": 1, "order_total": 1}
        )
        assert bad.isError  # the SDK validates against the schema it published


@pytest.mark.anyio
async def test_the_react_agent_follows_the_procedure_with_strict_named_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = tmp_path / "refunds.jsonl"
    monkeypatch.setenv("HELPDESK_REFUNDS_LEDGER", str(ledger))
    model = ScriptedModel(args=ARGS)
    graph = helpdesk_graph.build(MountedTools(await refunds_tools()), model=model)
    state = await graph.ainvoke({"messages": [HumanMessage("My headphones (A-1002) broke.")]})

    # one named tool per step, then an answer: what lets the tiny model make valid calls
    assert model.choices == ["lookup_order", "refund_policy", "issue_refund", "none"]
    for offered in model.tools:
        assert [t["function"]["name"] for t in offered] == list(ARGS)
        assert all(t["function"]["strict"] is True for t in offered)
        params = offered[1]["function"]["parameters"]  # the MCP server's own schema
        assert params["additionalProperties"] is False
        assert params["properties"]["category"]["enum"][0] == "electronics"

    results = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert [m.name for m in results] == list(ARGS)
    assert all(m.status == "success" for m in results), results
    assert "Alan Turing" in str(results[0].content)
    assert '"max_refund": 349.0' in str(results[1].content)
    refund = json.loads(ledger.read_text())
    assert refund["order_id"] == "A-1002" and refund["amount"] == 349.0
    assert refund["refund_id"] in str(results[2].content)
    assert str(state["messages"][-1].content).startswith("Done: ")


@pytest.mark.anyio
async def test_a_bad_order_reaches_the_model_as_a_tool_error_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HELPDESK_REFUNDS_LEDGER", str(tmp_path / "refunds.jsonl"))
    args = {
        **ARGS,
        "lookup_order": {"order_id": "B-9999"},
        "issue_refund": {"order_id": "A-1001", "amount": 500.0, "reason": "late"},
    }
    model = ScriptedModel(args=args)
    graph = helpdesk_graph.build(MountedTools(await refunds_tools()), model=model)
    state = await graph.ainvoke({"messages": [HumanMessage("refund B-9999")]})
    results = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert results[0].status == "error" and "no order 'B-9999'" in str(results[0].content)
    # more than the order's total: refused by the tool itself, not written
    assert results[2].status == "error" and "more than order A-1001's total" in str(
        results[2].content
    )
    assert not (tmp_path / "refunds.jsonl").exists()
    assert model.choices[-1] == "none"


def test_without_the_mounted_server_the_graph_says_what_is_missing() -> None:
    with pytest.raises(LookupError, match=r"refunds MCP server's 'refund_policy'.*\[tools.mcp"):
        helpdesk_graph.build(MountedTools([]), model=ScriptedModel(args=ARGS))
