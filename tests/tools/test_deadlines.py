"""A tool's timeout stops its work: the example sql.query, given a recursive CTE that never
ends, stops at its deadline in a worker thread (SQLite interrupted) and in its isolated process
(killed); the old query code, run the same way, keeps a CPU busy after its caller gave up.
Running calls are bounded per agent and per tool, released only when the work has ended.

Through the daemon with an agent's credentials: tests/security/test_tool_limits.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentd.errors import ToolError
from agentd.tools import CallDeadline, ToolRegistry, ToolSpec, call_deadline, run_tool
from agentd.tools._running import RunningCalls, TooManyRunning
from tests.harness import REPO

pytestmark = pytest.mark.anyio

RUNAWAY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"
TIMEOUT_S = 1.0
SLACK_S = 1.0
WINDOW_S = 1.0
# the query code sql.query had before: no progress handler, no interrupt
UNGUARDED = """
import sqlite3
from agentd.tools import tool

CONNECTIONS: list[sqlite3.Connection] = []

@tool("sql.unguarded")
def unguarded(query: str) -> list:
    db = sqlite3.connect(":memory:", check_same_thread=False)
    CONNECTIONS.append(db)
    try:
        return [list(row) for row in db.execute(query).fetchmany(1000)]
    finally:
        db.close()
"""


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ToolSpec:
    monkeypatch.setenv("AGENTD_LOANS_DB", str(tmp_path / "loans.sqlite"))
    spec = ToolRegistry.load(REPO / "tools").get("sql.query")
    assert spec is not None and spec.isolated  # user-shaped work: isolated by declaration
    return spec


async def cpu_over(window_s: float) -> float:
    """CPU seconds this process (every thread) spends during `window_s` of idle waiting."""
    before = time.process_time()
    await anyio.sleep(window_s)
    return time.process_time() - before


async def timed_out(spec: ToolSpec, query: str, **kw: Any) -> float:
    started = time.monotonic()
    with pytest.raises(ToolError, match="timed out") as caught:
        await run_tool(spec, spec.validate({"query": query}), timeout_s=TIMEOUT_S, **kw)
    assert caught.value.retryable
    return time.monotonic() - started


async def test_a_runaway_query_in_a_thread_stops_at_its_deadline(example: ToolSpec) -> None:
    finished = threading.Event()
    elapsed = await timed_out(example, RUNAWAY, isolated=False, on_finished=finished.set)
    assert elapsed < TIMEOUT_S + SLACK_S
    assert finished.wait(SLACK_S)  # the thread itself ended: its slot is free
    assert await cpu_over(WINDOW_S) < 0.1 * WINDOW_S
    # and the next query answers at once
    rows = await run_tool(
        example,
        example.validate({"query": "SELECT count(*) AS n FROM applications"}),
        timeout_s=TIMEOUT_S,
        isolated=False,
    )
    assert rows == [{"n": 4}]


async def test_a_runaway_query_in_its_process_stops_at_its_deadline(example: ToolSpec) -> None:
    finished = threading.Event()
    elapsed = await timed_out(example, RUNAWAY, on_finished=finished.set)
    assert elapsed < TIMEOUT_S + SLACK_S
    assert finished.is_set()  # the process is gone when the call returns
    assert await cpu_over(WINDOW_S) < 0.1 * WINDOW_S


async def test_control_the_old_query_code_keeps_running_after_its_timeout(
    tmp_path: Path,
) -> None:
    (tmp_path / "old.py").write_text(UNGUARDED)
    spec = ToolRegistry.load(tmp_path).get("sql.unguarded")
    assert spec is not None
    finished = threading.Event()
    try:
        await timed_out(spec, RUNAWAY, on_finished=finished.set)
        busy = await cpu_over(WINDOW_S)
        assert busy > 0.3 * WINDOW_S, busy  # the thread still runs the query
        assert not finished.is_set()  # so its slot is still taken
    finally:
        for db in spec.target.__globals__["CONNECTIONS"]:
            db.interrupt()  # the test stops what the old code could not
    assert finished.wait(5)


async def test_the_deadline_is_the_calls_and_cancels_what_a_tool_registered() -> None:
    assert call_deadline().remaining_s() == float("inf")  # outside a call: none
    deadline = CallDeadline(0.2)
    stopped: list[str] = []
    with deadline.on_cancel(lambda: stopped.append("query")):
        assert not deadline.expired()
        deadline.cancel()
        deadline.cancel()
    assert stopped == ["query"] and deadline.expired()
    with deadline.on_cancel(lambda: stopped.append("late")):  # already cancelled: at once
        pass
    assert stopped == ["query", "late"]


async def test_running_calls_are_bounded_per_agent_and_per_tool() -> None:
    running = RunningCalls(per_agent=2, per_tool=3)
    first, second = running.take("alpha", "sql.query"), running.take("alpha", "sql.query")
    with pytest.raises(TooManyRunning, match="alpha has 2 tool calls running") as agent_full:
        running.take("alpha", "credit.score")
    assert agent_full.value.rule == "[tools].max_running_per_agent"
    third = running.take("beta", "sql.query")
    with pytest.raises(TooManyRunning, match="3 calls of sql.query") as tool_full:
        running.take("gamma", "sql.query")
    assert tool_full.value.rule == "[tools].max_running_per_tool"
    with pytest.raises(TooManyRunning) as own_bound:
        running.take("gamma", "sql.query", tool_limit=1)
    assert own_bound.value.rule == "sql.query: max_running"
    # released from another thread (a worker thread's end), once however often
    await anyio.to_thread.run_sync(first.release)
    first.release()
    assert running.running(agent="alpha") == 1 and running.running(tool="sql.query") == 2
    running.take("gamma", "sql.query").release()
    for slot in (second, third):
        slot.release()
    assert running.running() == 0


async def test_a_sync_call_abandoned_before_its_thread_starts_never_runs(tmp_path: Path) -> None:
    (tmp_path / "old.py").write_text(UNGUARDED)
    spec = ToolRegistry.load(tmp_path).get("sql.unguarded")
    assert spec is not None
    limiter = anyio.to_thread.current_default_thread_limiter()
    finished = threading.Event()
    saved, blocker = limiter.total_tokens, object()
    limiter.total_tokens = limiter.borrowed_tokens + 1
    await limiter.acquire_on_behalf_of(blocker)  # no worker thread free now
    try:
        with pytest.raises(ToolError, match="timed out"):
            await run_tool(
                spec, spec.validate({"query": "SELECT 1"}), timeout_s=0.2, on_finished=finished.set
            )
        assert finished.is_set()  # no thread will ever run it: released at once
    finally:
        limiter.release_on_behalf_of(blocker)
        limiter.total_tokens = saved
    await anyio.sleep(0.2)
    assert spec.target.__globals__["CONNECTIONS"] == []  # it never ran
