"""A run that fails after a side effect goes on from its last checkpoint: the thread holds the
user's message once, and the tool call is repeated with the model's call id, so the gateway
answers it from its stored result instead of running it again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph

from agentd.bus import Message, Subjects, ensure_inbox_consumer, ensure_streams, ensure_trace_stream
from agentd.config import InboxConfig, ToolsConfig
from agentd.worker import WorkerSettings
from agentd.worker._resume import invoke_run, run_config
from tests.harness import REPO, TEST_AGENTS
from tests.tools.support import running_gateway

pytestmark = pytest.mark.anyio

COUNTER_TOOL = '''
from pathlib import Path
from agentd.tools import tool


@tool("counter.bump")
def bump(path: str) -> int:
    """Add one to the number in `path` (a side effect) and return it."""
    file = Path(path)
    n = int(file.read_text()) + 1 if file.exists() else 1
    file.write_text(str(n))
    return n
'''


def _flaky_tool_loop(calls: list[str]) -> Any:
    """A model that gives each tool call a fresh id, and a tool node whose first run fails after
    its side effect (noted in `calls`)."""

    def model(state: MessagesState) -> dict[str, Any]:
        if any(isinstance(m, ToolMessage) for m in state["messages"]):
            return {"messages": [AIMessage("done")]}
        call = {"name": "pay", "args": {}, "id": f"call_{uuid.uuid4().hex[:8]}"}
        return {"messages": [AIMessage("", tool_calls=[call])]}

    def tools(state: MessagesState) -> dict[str, Any]:
        last = state["messages"][-1]
        assert isinstance(last, AIMessage)
        calls.append(str(last.tool_calls[0]["id"]))
        if len(calls) == 1:
            raise ConnectionError("the bank hung up after paying")
        return {"messages": [ToolMessage("paid", tool_call_id=last.tool_calls[0]["id"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("model", model)
    builder.add_node("tools", tools)
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", _route, ["tools", END])
    builder.add_edge("tools", "model")
    return builder.compile(checkpointer=InMemorySaver())


def _route(state: MessagesState) -> str:
    last = state["messages"][-1]
    return "tools" if isinstance(last, AIMessage) and last.tool_calls else END


@pytest.mark.parametrize("resume", [True, False])
async def test_a_retry_goes_on_from_the_checkpoint_of_its_own_message(resume: bool) -> None:
    """resume=False is the control: fed its input again, the retry repeats the user's message
    and the model's new call id makes the tool call a new one."""
    calls: list[str] = []
    graph = _flaky_tool_loop(calls)
    config = run_config("conversation-1", "message-1")
    user = {"messages": [HumanMessage("pay my bill")]}
    with pytest.raises(ConnectionError):
        await invoke_run(graph, user, config, message_id="message-1", may_have_run=False)
    retry = {"messages": [HumanMessage("pay my bill")]}
    output, resumed = await invoke_run(
        graph, retry, config, message_id="message-1", may_have_run=resume
    )
    humans = [m for m in output["messages"] if isinstance(m, HumanMessage)]
    assert resumed is resume
    if resume:
        assert len(humans) == 1 and calls[0] == calls[1]
    else:
        assert len(humans) == 2 and calls[0] != calls[1]
    # a finished run whose ledger entry is missing: nothing runs again, its output comes back
    again, resumed = await invoke_run(
        graph, retry, config, message_id="message-1", may_have_run=True
    )
    assert resumed and again == output and len(calls) == 2
    # another message of the conversation starts from its input
    _, resumed = await invoke_run(
        graph, retry, config | {}, message_id="message-2", may_have_run=True
    )
    assert not resumed


def _worker(url: str, prefix: str, state_dir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    settings = WorkerSettings(
        agent="resumer",
        replica="resumer-0",
        agent_dir=TEST_AGENTS / "resumer",
        nats_url=url,
        prefix=prefix,
        state_dir=state_dir,
        ack_wait_s=1.0,
    )
    full_env = {**os.environ, **settings.to_env(), **env, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "agentd.worker", "--agent", "resumer"],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.integration
async def test_a_replica_killed_after_a_side_effect_resumes_without_repeating_it(
    nats_url: str, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    subjects = Subjects(prefix)
    tools_dir = tmp_path / "tools"
    tools_dir.mkdir()
    (tools_dir / "counter.py").write_text(COUNTER_TOOL)
    counter, marker = tmp_path / "counter", tmp_path / "killed"
    env = {
        "RESUMER_COUNTER": str(counter),
        "RESUMER_KILL_MARKER": str(marker),
        "AGENTD_TOOL_TIMEOUT_S": "20",
    }
    nc = await nats.connect(nats_url)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        js = nc.jetstream()
        await ensure_streams(js, subjects, InboxConfig(ack_wait_s=1.0))
        await ensure_trace_stream(
            js, subjects, max_bytes=2**24, max_age_s=600, duplicate_window_s=60
        )
        await ensure_inbox_consumer(js, subjects, "resumer", ack_wait_s=1.0, max_deliver=5)
        async with running_gateway(
            nats_url,
            point=None,
            prefix=prefix,
            tools_dir=tools_dir,
            agent_tools={"resumer": ["counter.bump"]},
            config=ToolsConfig(call_timeout_s=10),
        ) as gw:
            reply_to = subjects.reply("tester", "1")
            replies = await nc.subscribe(reply_to, max_msgs=1)
            message = Message.model_validate(
                {
                    "from": "tester",
                    "to": "resumer",
                    "payload": "bump the counter",  # plain text: the graph takes messages
                    "reply_to": reply_to,
                    "whole_state": True,
                }
            )
            await js.publish(
                subjects.inbox("resumer"), message.to_json(), headers={"Nats-Msg-Id": message.id}
            )
            workers.append(_worker(nats_url, prefix, tmp_path / "state", env))
            code = await anyio.to_thread.run_sync(workers[0].wait, 50)  # a loaded host is slow
            assert code == -9 and marker.exists()  # SIGKILLed right after the tool ran
            assert counter.read_text() == "1"

            workers.append(_worker(nats_url, prefix, tmp_path / "state", env))
            result = json.loads((await replies.next_msg(timeout=50)).data)
            assert result["ok"], result
            messages = result["output"]["messages"]
            assert [m["type"] for m in messages] == ["human", "ai", "tool", "ai"]
            assert messages[0]["content"] == "bump the counter"  # once
            assert messages[-1]["content"] == "bumped to 1"
            assert counter.read_text() == "1"  # the side effect happened once
            executed = gw.records.of("tool.executed")
            assert [r["decision"] for r in executed] == ["ok", "replayed"]
            call_id = messages[1]["tool_calls"][0]["id"]
            assert {r["attributes"]["call_id"] for r in executed} == {call_id}
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
                worker.wait(15)
        await nc.close()


def test_the_resume_bench_runs_in_smoke_mode() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "resume.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["runs"] == 20 and result["ratio_agentd_over_raw_p50"] > 0
    assert result["resume_check"]["p50_us"] > 0
