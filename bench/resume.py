"""Benchmark: what resumable runs cost. One run of a three-step messages graph (model, tool,
model: a ReAct turn) on SQLite checkpoints, as a replica makes it (`agentd.worker._resume`:
`durability="sync"`, the message id in the checkpoint metadata) against the raw baseline, the
same graph through `graph.ainvoke` with LangGraph's default durability ("async"), measured in
the same run on the same database; and the check a retry makes before it resumes (reading the
thread's latest checkpoint) against the same raw run. Prints one JSON object.

    PYTHONPATH=. python bench/resume.py [--runs 300] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver  # noqa: E402
from langgraph.graph import END, START, MessagesState, StateGraph  # noqa: E402

from agentd.worker._resume import invoke_run, resumable, run_config  # noqa: E402
from bench._common import percentiles  # noqa: E402


def _graph(saver: AsyncSqliteSaver) -> Any:
    def model(state: MessagesState) -> dict[str, Any]:
        if isinstance(state["messages"][-1], ToolMessage):
            return {"messages": [AIMessage("done")]}
        call = {"name": "lookup", "args": {"order": "A-1"}, "id": "call_1"}
        return {"messages": [AIMessage("", tool_calls=[call])]}

    def tool(state: MessagesState) -> dict[str, Any]:
        return {"messages": [ToolMessage("shipped", tool_call_id="call_1")]}

    def route(state: MessagesState) -> str:
        last = state["messages"][-1]
        return "tool" if isinstance(last, AIMessage) and last.tool_calls else END

    builder = StateGraph(MessagesState)
    builder.add_node("model", model)
    builder.add_node("tool", tool)
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", route, ["tool", END])
    builder.add_edge("tool", "model")
    return builder.compile(checkpointer=saver)


async def _measure(runs: int, folder: Path) -> dict[str, Any]:
    raw: list[float] = []
    agentd: list[float] = []
    check: list[float] = []
    async with AsyncSqliteSaver.from_conn_string(str(folder / "bench.sqlite")) as saver:
        graph = _graph(saver)
        for i in range(runs):  # interleaved, so both see the same database and machine load
            user = {"messages": [HumanMessage("where is my order?")]}
            started = time.perf_counter()
            await graph.ainvoke(user, {"configurable": {"thread_id": f"raw-{i}"}})
            raw.append(time.perf_counter() - started)
            config = run_config(f"agentd-{i}", f"m-{i}")
            started = time.perf_counter()
            await invoke_run(graph, user, config, message_id=f"m-{i}", may_have_run=False)
            agentd.append(time.perf_counter() - started)
            started = time.perf_counter()
            assert await resumable(graph, config, f"m-{i}")
            check.append(time.perf_counter() - started)
    raw_p, agentd_p, check_p = percentiles(raw), percentiles(agentd), percentiles(check)
    return {
        "runs": runs,
        "raw_ainvoke_async_durability": raw_p,
        "agentd_run_sync_durability": agentd_p,
        "resume_check": check_p,
        "ratio_agentd_over_raw_p50": round(agentd_p["p50_us"] / raw_p["p50_us"], 3),
        "ratio_resume_check_over_raw_run_p50": round(check_p["p50_us"] / raw_p["p50_us"], 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--smoke", action="store_true", help="a few runs, to check it works")
    args = parser.parse_args(argv)
    runs = 20 if args.smoke else args.runs
    with tempfile.TemporaryDirectory() as folder:
        result = asyncio.run(_measure(runs, Path(folder)))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
