"""The underwriter drafts a rationale only when its params name a model and it has the
gateway; otherwise its graph is the rules alone. (The draft itself, through real vLLM, is in
test_gateway_vllm.py.)"""

from __future__ import annotations

import pytest

from tests.gateway.underwriter import APPLICATION, Context, underwriter_graph


def nodes(ctx: Context) -> set[str]:
    return set(underwriter_graph.build(ctx).get_graph().nodes) - {"__start__", "__end__"}


def test_no_model_no_gateway_no_llm_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTD_LLM_URL", raising=False)
    assert nodes(Context()) == {"assess"}
    assert nodes(Context(params={"model": "main"})) == {"assess"}
    monkeypatch.setenv("AGENTD_LLM_URL", "http://127.0.0.1:1/v1")
    assert nodes(Context()) == {"assess"}
    assert nodes(Context(params={"model": "main"})) == {"assess", "draft_rationale"}


@pytest.mark.anyio
async def test_an_unreachable_model_leaves_the_assessment_standing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTD_LLM_URL", "http://127.0.0.1:1/v1")  # nothing listens there
    monkeypatch.setenv("AGENTD_LLM_TOKEN", "t")
    rules_only = await underwriter_graph.build(Context()).ainvoke(APPLICATION)
    drafted = await underwriter_graph.build(Context(params={"model": "main"})).ainvoke(APPLICATION)
    assert "error" in drafted["rationale"] and drafted["rationale"]["model"] == "main"
    assert {k: v for k, v in drafted.items() if k != "rationale"} == rules_only
