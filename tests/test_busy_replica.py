"""Liveness under load: a replica whose run holds its event loop is busy, not hung.

A real daemon runs an agent whose graph computes without awaiting for longer than the liveness
window (2.5 heartbeats): its heartbeats come from a thread of their own, so it is not killed.
The control: the same graph with a run_timeout_s shorter than the stall is hung (its loop is
stuck past anything a run may take) and is killed and restarted.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentd.daemon._heartbeats import _kept
from tests.harness import decision_records, running_daemon, send_and_collect, write_config

HOG_GRAPH = '''
"""Holds the event loop: a CPU-bound node that never awaits."""

import time
from typing import Any

from langgraph.graph import END, START, StateGraph


async def hog(state: dict[str, Any]) -> dict[str, Any]:
    end = time.monotonic() + float(state["seconds"])
    n = 0
    while time.monotonic() < end:  # pure Python: the GIL is only lent, the loop never runs
        n += 1
    return {**state, "spins": n}


builder = StateGraph(dict)
builder.add_node("hog", hog)
builder.add_edge(START, "hog")
builder.add_edge("hog", END)
graph = builder.compile()
'''


def _hog_agent(root: Path, *, run_timeout_s: float) -> Path:
    agents = root / "agents"
    (agents / "hog").mkdir(parents=True)
    (agents / "hog" / "agent.toml").write_text(
        f'name = "hog"\ngraph = "hog_graph:graph"\ncheckpoint = false\nautoscale = false\n'
        f"run_timeout_s = {run_timeout_s}\nmax_deliveries = 1\n"
    )
    (agents / "hog" / "hog_graph.py").write_text(HOG_GRAPH)
    return agents


def _replica(daemon: Any) -> dict[str, Any]:
    rows = json.loads(daemon.agentctl("ps", "--json").stdout)
    replicas: list[dict[str, Any]] = rows[0]["replicas"]
    assert len(replicas) == 1, rows
    return replicas[0]


@pytest.mark.integration
def test_a_run_that_holds_the_loop_longer_than_the_liveness_window_is_not_killed(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, agents_dir=_hog_agent(tmp_path, run_timeout_s=60))
    with running_daemon(config) as daemon:
        before = _replica(daemon)
        # 2.5 heartbeats (1 s each) is the liveness window; this run holds the loop for 6 s
        results = anyio.run(
            lambda: send_and_collect(daemon.url, "hog", [{"seconds": 6}], timeout_s=60)
        )
        (result,) = results.values()
        assert result["ok"], result
        after = _replica(daemon)
        assert (after["pid"], after["restarts"]) == (before["pid"], 0), after
        assert daemon.stop() == 0
    killed = [
        r
        for r in decision_records(tmp_path / "state")
        if r.get("agent") == "hog"
        and r["kind"] in {"agent.restarted", "agent.exited"}
        and "liveness" in (r.get("reason") or "")
    ]
    assert not killed, killed


@pytest.mark.integration
def test_a_loop_stuck_past_the_run_timeout_is_hung_and_restarted(tmp_path: Path) -> None:
    """The control: the same stall, but longer than anything a run of this agent may take."""
    config = write_config(tmp_path, agents_dir=_hog_agent(tmp_path, run_timeout_s=0.5))
    with running_daemon(config) as daemon:
        before = _replica(daemon)
        daemon.agentctl("send", "hog", json.dumps({"seconds": 8}))
        deadline = time.monotonic() + 30
        while (now := _replica(daemon))["pid"] == before["pid"]:
            assert time.monotonic() < deadline, f"a stuck replica was not restarted: {now}"
            time.sleep(0.5)
        assert daemon.stop() == 0
    reasons = [
        r.get("reason") or ""
        for r in decision_records(tmp_path / "state")
        if r.get("agent") == "hog" and r["kind"] in {"agent.restarted", "agent.exited"}
    ]
    assert any("liveness" in reason for reason in reasons), reasons


def test_a_beat_keeps_its_loop_stall_within_bounds() -> None:
    """What a replica says about its loop is bounded like every other field of a beat."""
    assert _kept({"loop_stall_s": 2.5})["loop_stall_s"] == 2.5
    assert _kept({"loop_stall_s": 1e300})["loop_stall_s"] == 1e9
    assert _kept({"loop_stall_s": -5})["loop_stall_s"] == 0.0
    assert "loop_stall_s" not in _kept({"loop_stall_s": "soon"})
    assert "loop_stall_s" not in _kept({"loop_stall_s": float("nan")})
    assert "loop_stall_s" not in _kept({"loop_stall_s": True})
