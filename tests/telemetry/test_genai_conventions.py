"""Spans against the OpenTelemetry GenAI semantic conventions (docs/gen-ai/gen-ai-spans.md and
gen-ai-agent-spans.md): `error.type` is Conditionally Required "if the operation ended in an
error", on agent spans as on inference spans; `request_attributes` maps what a request sent.
The gateway's inference spans end to end: tests/gateway/test_conformance_fake.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from opentelemetry.trace import StatusCode

from agentd.telemetry import (
    execute_tool_span,
    invoke_agent_span,
    note_tool_decision,
    request_attributes,
)
from tests.telemetry.conftest import Traced


class RunFailed(RuntimeError):
    pass


def test_a_failed_run_span_carries_error_type(traced: Callable[..., Traced]) -> None:
    telemetry, exporter = traced()
    with (
        pytest.raises(RunFailed),
        invoke_agent_span(
            "intake", conversation_id="c", run_id="r", message_id="m", sender="x", replica="i-0"
        ),
    ):
        raise RunFailed("the graph raised")
    with invoke_agent_span(
        "intake", conversation_id="c", run_id="r2", message_id="m2", sender="x", replica="i-0"
    ):
        pass
    # a span that already says why it failed keeps its own error.type
    with pytest.raises(RunFailed), execute_tool_span("lookup", agent="intake"):
        note_tool_decision("tool.denied", decision="denied", rule="r1", reason="no")
        raise RunFailed("after the denial")
    telemetry.force_flush()
    failed, ok, tool = exporter.get_finished_spans()
    assert failed.attributes is not None and ok.attributes is not None
    assert failed.attributes["error.type"] == "RunFailed"
    assert failed.status.status_code is StatusCode.ERROR
    assert "error.type" not in ok.attributes and ok.status.status_code is StatusCode.UNSET
    assert tool.attributes is not None and tool.attributes["error.type"] == "denied"


def test_request_attributes_are_what_was_sent_with_the_conventions_types() -> None:
    body = {
        "temperature": 0,  # an int in JSON: the convention's type is double
        "top_p": 1,
        "top_k": 40,
        "seed": 3,
        "stop": "###",
        "n": 1,  # 1: choice.count is left out
        "response_format": {"type": "json_object"},
        "frequency_penalty": True,  # not a number: left out, not guessed at
        "presence_penalty": "high",
    }
    got = request_attributes(body, 64)
    assert got == {
        "gen_ai.request.temperature": 0.0,
        "gen_ai.request.top_p": 1.0,
        "gen_ai.request.top_k": 40.0,
        "gen_ai.request.seed": 3,
        "gen_ai.request.stop_sequences": ["###"],
        "gen_ai.request.max_tokens": 64,
        "gen_ai.output.type": "json",
    }
    assert isinstance(got["gen_ai.request.temperature"], float)
    assert request_attributes({"response_format": {"type": "text"}}, None) == {
        "gen_ai.output.type": "text"
    }
    assert request_attributes({"seed": 1.5, "n": 3}, None) == {"gen_ai.request.choice.count": 3}
