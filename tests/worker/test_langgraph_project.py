"""A LangGraph Server project imported with `agentd agents import` and served by a real daemon,
asked in plain text; messages that cannot fit and failures no retry can fix are dead-lettered at
once, while a transient failure retries from its checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import REPO, TEST_AGENTS, DaemonProcess, running_daemon, write_config

pytestmark = pytest.mark.integration

LANGGRAPH_JSON = {
    "dependencies": [".", "langgraph>=1.0", "surely-not-installed-pkg"],
    "graphs": {
        "chat": "./src/chat/graph.py:graph",
        "Summarise Bot": {"path": "./src/summary.py:make_graph", "description": "summarises"},
    },
    "env": ".env",
}

CHAT = """
from langchain_core.messages import AIMessage
from langgraph.graph import END, START, MessagesState, StateGraph

from src.common import shout  # the project's own package, as LangGraph Server imports it


def reply(state: MessagesState):
    return {"messages": [AIMessage(shout(state["messages"][-1].content))]}


builder = StateGraph(MessagesState)
builder.add_node("reply", reply)
builder.add_edge(START, "reply")
builder.add_edge("reply", END)
graph = builder.compile()
"""

SUMMARY = '''
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, MessagesState, StateGraph


async def make_graph(config: RunnableConfig):
    """A LangGraph Server factory: called with a RunnableConfig."""
    agent = config["configurable"]["agent"]

    def summarise(state: MessagesState):
        words = state["messages"][-1].content.split()
        return {"messages": [AIMessage(f"{agent}: " + " ".join(words[:2]) + " ...")]}

    builder = StateGraph(MessagesState)
    builder.add_node("summarise", summarise)
    builder.add_edge(START, "summarise")
    builder.add_edge("summarise", END)
    return builder.compile()
'''


def _project(root: Path) -> Path:
    (root / "src" / "chat").mkdir(parents=True)
    (root / "src" / "chat" / "graph.py").write_text(CHAT)
    (root / "src" / "common.py").write_text("def shout(text):\n    return text.upper() + '!'\n")
    (root / "src" / "summary.py").write_text(SUMMARY)
    (root / ".env").write_text("OPENAI_API_KEY=sk-not-copied\n")
    (root / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "0"\ndependencies = ["pydantic>=2"]\n'
    )
    config = root / "langgraph.json"
    config.write_text(json.dumps(LANGGRAPH_JSON))
    return config


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("files")
    (base / "flaky").mkdir()
    return {"flaky": base / "flaky", "log": base / "unserialisable.log"}


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("langgraph-project")
    agents_dir = directory / "agents"
    agents_dir.mkdir()
    for name in ("flaky", "unserialisable"):
        (agents_dir / name).symlink_to(TEST_AGENTS / name)
    config = write_config(directory, agents_dir=agents_dir, extra="[autoscale]\nenabled = false\n")
    project = _project(directory / "app")
    out = subprocess.run(
        [sys.executable, "-m", "agentd.cli.agentd", "--config", str(config), "agents", "import",
         str(project)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    return {"config": config, "agents": agents_dir, "out": out, "project": project}


@pytest.fixture(scope="module")
def daemon(imported: dict[str, Any], files: dict[str, Path]) -> Iterator[DaemonProcess]:
    env = {"FLAKY_DIR": str(files["flaky"]), "UNSERIALISABLE_LOG": str(files["log"])}
    with running_daemon(imported["config"], env=env) as d:
        yield d
        assert d.stop() == 0


def test_import_writes_an_agent_per_graph_and_reports_what_is_missing(
    imported: dict[str, Any],
) -> None:
    out = imported["out"]
    assert out.returncode == 0, out.stderr
    assert "chat" in out.stdout and "summarise-bot" in out.stdout
    assert "missing       surely-not-installed-pkg" in out.stdout
    assert "installed     pydantic>=2" in out.stdout  # from the local package's pyproject
    assert "sets OPENAI_API_KEY: not copied" in out.stdout
    chat = (imported["agents"] / "chat" / "agent.toml").read_text()
    assert 'graph = "src/chat/graph.py:graph"' in chat and 'project = "../../app"' in chat
    assert "sk-not-copied" not in chat
    again = subprocess.run(
        [sys.executable, "-m", "agentd.cli.agentd", "--config", str(imported["config"]),
         "agents", "import", str(imported["project"])],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert again.returncode == 2 and "exists (--force replaces" in again.stderr


def test_both_imported_graphs_are_served_and_asked_in_plain_text(daemon: DaemonProcess) -> None:
    chat = daemon.agentctl("ask", "chat", "hello there")
    assert chat.returncode == 0, chat.stderr + daemon.log()[-3000:]
    assert chat.stdout.strip() == "HELLO THERE!"  # the last AI message, as text
    summary = daemon.agentctl("ask", "summarise-bot", "one two three four")
    assert summary.returncode == 0, summary.stderr
    assert summary.stdout.strip() == "summarise-bot: one two ..."
    state = daemon.agentctl("ask", "chat", "again", "--state")
    assert state.returncode == 0, state.stderr
    messages = json.loads(state.stdout)["messages"]
    assert [(m["type"], m["content"]) for m in messages] == [("human", "again"), ("ai", "AGAIN!")]


def _dead_letter(daemon: DaemonProcess, agent: str, message_id: str) -> dict[str, Any]:
    listed = json.loads(daemon.agentctl("--json", "dlq", "list", "--agent", agent).stdout)
    (entry,) = [e for e in listed if e["message_id"] == message_id]
    return dict(entry)


def test_a_payload_that_does_not_fit_is_dead_lettered_at_once_naming_what_fits(
    daemon: DaemonProcess,
) -> None:
    out = daemon.agentctl("--json", "ask", "chat", '{"question": "hi"}')
    assert out.returncode == 0, out.stderr
    failed = json.loads(out.stdout)
    assert failed["ok"] is False
    assert (
        "agent 'chat' takes plain text or a JSON object with any of the keys messages"
        in (failed["error"])
    )
    assert "not retried: the message does not fit the graph's input" in failed["error"]
    entry = _dead_letter(daemon, "chat", failed["message_id"])
    assert entry["deliveries"] == 1 and "does not fit" in entry["error"]


def test_an_unserialisable_state_is_dead_lettered_after_one_attempt(
    daemon: DaemonProcess, files: dict[str, Path]
) -> None:
    out = daemon.agentctl("--json", "ask", "unserialisable", '{"n": 1}')
    failed = json.loads(out.stdout)
    assert failed["ok"] is False and "not msgpack serializable" in failed["error"]
    assert "cannot be serialised for its checkpoint" in failed["error"]
    assert _dead_letter(daemon, "unserialisable", failed["message_id"])["deliveries"] == 1
    assert files["log"].read_text().splitlines() == ["attempt"]  # not 5 (max_deliveries)


def test_a_transient_failure_retries_from_its_checkpoint(daemon: DaemonProcess) -> None:
    out = daemon.agentctl("--json", "ask", "flaky", "what is the time?", "--state")
    result = json.loads(out.stdout)
    assert result["ok"], result
    messages = [(m["type"], m["content"]) for m in result["output"]["messages"]]
    assert messages == [
        ("human", "what is the time?"),
        ("ai", "let me think"),
        ("ai", "answered 'what is the time?' (1 asked)"),
    ]
    listed = json.loads(daemon.agentctl("--json", "dlq", "list", "--agent", "flaky").stdout)
    assert listed == []
