"""What an intercepted tool call sends the gateway and gets back: the arguments policy decides
on, the outcome of the body as the gateway stores it, and the text of a refusal the model reads
(agentd/worker/_local_tools.py)."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from pydantic import ValidationError
from pydantic_core import to_jsonable_python

__all__ = ["outcome", "policy_args", "refusal_text"]


def policy_args(
    tool: BaseTool, tool_input: Any, tool_call_id: str | None, injected: frozenset[str]
) -> tuple[dict[str, Any], str | None]:
    """The arguments policy decides on: validated by the tool's own schema, without the values
    LangGraph injects (state, store, the call id), in JSON form; or the raw ones and why they
    do not fit."""
    if isinstance(tool_input, str):
        return {"input": tool_input}, None
    raw = dict(tool_input) if isinstance(tool_input, dict) else {"input": tool_input}
    try:
        validated = tool._parse_input(dict(raw), tool_call_id)
    except (ValidationError, ValueError, TypeError) as exc:
        return _jsonable(_without(injected, raw)), _invalid_text(exc)
    if not isinstance(validated, dict):
        return {"input": validated}, None
    return _jsonable(_without(injected, validated)), None


def _without(injected: frozenset[str], args: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in args.items() if k not in injected}


def _jsonable(value: Any) -> Any:
    return to_jsonable_python(value, fallback=str)


def _invalid_text(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['msg']}"
            for e in exc.errors()
        )[:4096]
    return str(exc)[:4096]


def outcome(output: Any, error: BaseException | None) -> tuple[bool, Any, str | None]:
    """What the body did, as the gateway stores it: a ToolMessage's content (a handled
    `ToolException` is a failure), else the output in JSON form."""
    if error is not None:
        return False, None, f"{type(error).__name__}: {error}"[:4096]
    if isinstance(output, ToolMessage):
        if output.status == "error":
            return False, None, str(output.content)[:4096]
        return True, _jsonable(output.content), None
    return True, _jsonable(output), None


def refusal_text(tool: str, error: dict[str, Any]) -> str:
    code = error.get("code") or "error"
    rule = f" (rule {error['rule']})" if error.get("rule") else ""
    approval = f" [approval {error['approval_id']}]" if error.get("approval_id") else ""
    retry = f"; retry after {error['retry_after_s']:g}s" if error.get("retry_after_s") else ""
    message = error.get("message") or "refused"
    return f"Error: agentd refused {tool}: {code}{rule}{approval}: {message}{retry}"
