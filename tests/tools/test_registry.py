"""Tools from a directory of files: schemas from type hints, and errors that name file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentd.errors import ConfigError
from agentd.tools import InvalidArguments, ToolRegistry, tool

from .support import EXAMPLE_TOOLS


def _tools(tmp_path: Path, **files: str) -> Path:
    directory = tmp_path / "tools"
    directory.mkdir()
    for name, text in files.items():
        (directory / f"{name}.py").write_text(text)
    return directory


def test_the_example_tools_load_with_closed_schemas() -> None:
    registry = ToolRegistry.load(EXAMPLE_TOOLS)
    assert registry.names == ["credit.score", "http.fetch", "loan.approve", "sql.query"]
    loan = registry.get("loan.approve")
    assert loan is not None
    assert loan.schema["additionalProperties"] is False
    assert loan.schema["required"] == ["applicant_id", "amount", "payee"]
    assert loan.schema["properties"]["amount"]["type"] == "number"
    assert "ledger" in loan.description
    fetch = registry.get("http.fetch")
    assert fetch is not None and fetch.isolated and fetch.timeout_s == 10
    # what their sandboxes add (docs/sandbox.md, "Isolated tools")
    query = registry.get("sql.query")
    assert query is not None and query.isolated
    assert query.write == ("$AGENTD_STATE_DIR/tools/sql",) and query.read == ("$AGENTD_LOANS_DB",)
    assert loan.write == () and loan.connect_ports == ()
    assert registry.get("loan.approve.batch") is None


def test_validation_is_strict_and_names_each_field() -> None:
    loan = ToolRegistry.load(EXAMPLE_TOOLS).get("loan.approve")
    assert loan is not None
    args = loan.validate({"applicant_id": "A-1", "amount": 5000, "payee": "acct-1001"})
    assert args.model_dump() == {"applicant_id": "A-1", "amount": 5000.0, "payee": "acct-1001"}
    with pytest.raises(InvalidArguments) as caught:
        loan.validate({"applicant_id": 7, "amount": "5000", "extra": True})
    problems = caught.value.problems
    assert any(p.startswith("applicant_id:") for p in problems)
    assert any(p.startswith("amount:") for p in problems)  # a string is not a number
    assert "payee: required argument is missing" in problems
    assert "extra: not an argument of loan.approve" in problems
    with pytest.raises(InvalidArguments, match="amount"):
        loan.validate({"applicant_id": "A-1", "amount": True, "payee": "acct-1001"})


def test_typed_functions_sync_and_async(tmp_path: Path) -> None:
    directory = _tools(
        tmp_path,
        text=(
            "from typing import Literal\n"
            "from pydantic import BaseModel\n"
            "from agentd.tools import tool\n\n"
            "class Window(BaseModel):\n"
            "    start: int\n"
            "    end: int\n\n"
            '@tool("text.count", timeout_s=2)\n'
            "async def count(text: str, window: Window, mode: Literal['a', 'b'] = 'a') -> int:\n"
            '    """Count characters."""\n'
            "    return len(text[window.start:window.end])\n\n"
            "def helper() -> None:\n"
            "    pass\n"
        ),
        _private="raise RuntimeError('helpers starting with _ are not imported')\n",
    )
    registry = ToolRegistry.load(directory)
    assert registry.names == ["text.count"]
    spec = registry.get("text.count")
    assert spec is not None
    assert spec.is_async and spec.timeout_s == 2 and spec.description == "Count characters."
    assert spec.schema["properties"]["mode"]["enum"] == ["a", "b"]
    assert spec.validate({"text": "abc", "window": {"start": 0, "end": 2}}).window.end == 2  # type: ignore[attr-defined]
    with pytest.raises(InvalidArguments, match=r"window\.end: required"):
        spec.validate({"text": "abc", "window": {"start": 0}})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("def broken(:\n", "line 1: syntax error"),
        ("import json\nraise RuntimeError('no database')\n", "line 2: importing failed: "),
        (
            "from agentd.tools import tool\n\n@tool('a.b')\ndef f(*args: int) -> None: ...\n",
            "line 3: tool a.b (f): *args",
        ),
        (
            "from agentd.tools import tool\n\n@tool('a.b')\ndef f(x) -> None: ...\n",
            "line 3: tool a.b (f): argument 'x' has no type hint",
        ),
        (
            "from agentd.tools import tool\n\n@tool('a.b')\ndef f(x: 'Missing') -> None: ...\n",
            "line 3: tool a.b (f): its type hints cannot be resolved",
        ),
        (
            "from agentd.tools import tool\n\n@tool('a b')\ndef f() -> None: ...\n",
            "line 3: importing failed: ValueError: tool name 'a b'",
        ),
        (
            "from agentd.tools import tool\n\n@tool('a.b', connect_ports=[0])\n"
            "def f() -> None: ...\n",
            "line 3: importing failed: ValueError: tool a.b: connect_ports: 0 is not a TCP port",
        ),
        (
            "from agentd.tools import tool\n\n@tool('a.b', read='/srv')\ndef f() -> None: ...\n",
            "line 3: importing failed: ValueError: tool a.b: read must be a list of paths",
        ),
    ],
)
def test_a_broken_tools_file_names_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    directory = _tools(tmp_path, good="from agentd.tools import tool\n", broken=text)
    with pytest.raises(ConfigError) as caught:
        ToolRegistry.load(directory)
    assert caught.value.source == str((directory / "broken.py").resolve())
    assert any(p.startswith(expected) for p in caught.value.problems), caught.value.problems


def test_a_duplicate_tool_name_names_both_places(tmp_path: Path) -> None:
    one = "from agentd.tools import tool\n\n@tool('pay')\ndef pay(x: int) -> int:\n    return x\n"
    directory = _tools(tmp_path, a=one, b="\n" + one)
    with pytest.raises(ConfigError) as caught:
        ToolRegistry.load(directory)
    [problem] = caught.value.problems
    assert "b.py:4" in problem and "a.py:3" in problem
    with pytest.raises(ConfigError, match="tools directory not found"):
        ToolRegistry.load(tmp_path / "nowhere")


def test_the_decorator_leaves_the_function_callable() -> None:
    @tool("math.double")
    def double(x: int) -> int:
        return 2 * x

    assert double(4) == 8
    with pytest.raises(ValueError, match="timeout_s"):
        tool("math.half", timeout_s=0)


def test_langchain_tools_are_accepted(tmp_path: Path) -> None:
    directory = _tools(
        tmp_path,
        lc=(
            "from langchain_core.tools import tool\n\n"
            '@tool("text.upper")\n'
            "def upper(text: str) -> str:\n"
            '    """Upper-case a text."""\n'
            "    return text.upper()\n"
        ),
    )
    spec = ToolRegistry.load(directory).get("text.upper")
    assert spec is not None
    assert spec.kind == "langchain"
    assert spec.description == "Upper-case a text."
    assert spec.schema["properties"]["text"]["type"] == "string"
    with pytest.raises(InvalidArguments, match="shout: not an argument"):
        spec.validate({"text": "a", "shout": True})
