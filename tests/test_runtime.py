"""The agent runtime against one real daemon: ordering, scaling, dead letters, crash loops,
hung replicas, spawned agents, broken specs."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.eventually import eventually
from tests.harness import (
    TEST_AGENTS,
    DaemonProcess,
    ledger_entries,
    pid_alive,
    running_daemon,
    send_and_collect,
    write_config,
)

pytestmark = pytest.mark.integration

AGENTS = ["echo", "ordered", "slow", "poison", "crashy", "broken", "parent", "child"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("files")
    return {"order": base / "order.log", "fix": base / "poison.fixed"}


@pytest.fixture(scope="module")
def daemon(
    tmp_path_factory: pytest.TempPathFactory, files: dict[str, Path]
) -> Iterator[DaemonProcess]:
    directory = tmp_path_factory.mktemp("runtime")
    agents_dir = directory / "agents"
    agents_dir.mkdir()
    for name in AGENTS:  # echo from the examples, the rest from tests/agents
        source = TEST_AGENTS / name if name != "echo" else TEST_AGENTS.parent.parent / "agents/echo"
        (agents_dir / name).symlink_to(source)
    config = write_config(
        directory,
        agents_dir=agents_dir,
        extra="[autoscale]\nenabled = false\n",
    )
    env = {
        "ORDER_LOG": str(files["order"]),
        "POISON_FIX": str(files["fix"]),
        "POISON_FIX_DIR": str(files["fix"].parent),
    }
    with running_daemon(config, env=env) as d:
        yield d
        assert d.stop() == 0


def ps(daemon: DaemonProcess) -> dict[str, dict[str, Any]]:
    out = daemon.agentctl("--json", "ps")
    assert out.returncode == 0, out.stderr
    return {a["agent"]: a for a in json.loads(out.stdout)}


def test_a_malformed_spec_names_file_and_field_and_the_others_start(daemon: DaemonProcess) -> None:
    status = json.loads(daemon.agentctl("--json", "status").stdout)
    (error,) = status["spec_errors"]
    assert "broken/agent.toml" in error
    assert "concurrency: Input should be a valid integer" in error
    agents = ps(daemon)
    assert "broken" not in agents
    assert agents["echo"]["replicas"][0]["state"] == "running"


def test_a_crash_looping_agent_is_failed_and_the_others_keep_serving(
    daemon: DaemonProcess,
) -> None:
    eventually(lambda: ps(daemon)["crashy"]["state"] == "failed", 30, "crashy to fail")
    crashy = ps(daemon)["crashy"]
    assert crashy["replicas"] == []
    assert "this agent is broken on purpose" in crashy["error"]
    table = daemon.agentctl("ps").stdout
    assert any(line.startswith("crashy") and "failed" in line for line in table.splitlines())
    out = daemon.agentctl("send", "echo", '{"still": "here"}', "--wait")
    assert out.returncode == 0 and json.loads(out.stdout) == {"still": "here"}


def test_order_within_a_conversation_with_concurrency_16(
    daemon: DaemonProcess, files: dict[str, Path]
) -> None:
    conversations = [f"conv{c}" for c in range(50)]
    payloads, convs = [], []
    for seq in range(8):
        for conv in conversations:  # interleaved: every conversation's n-th, then the n+1-th
            payloads.append({"conversation": conv, "seq": seq})
            convs.append(conv)
    results = anyio.run(
        lambda: send_and_collect(daemon.url, "ordered", payloads, conversations=convs)
    )
    assert len(results) == 400 and all(r["ok"] for r in results.values())
    seen: dict[str, list[int]] = defaultdict(list)
    for line in files["order"].read_text().splitlines():
        conv, seq = line.split()
        seen[conv].append(int(seq))
    assert set(seen) == set(conversations)
    for conv, seqs in seen.items():
        assert seqs == list(range(8)), (conv, seqs)


def test_scale_1_to_4_to_1_under_load_loses_nothing(daemon: DaemonProcess) -> None:
    async def scenario() -> dict[str, dict[str, Any]]:
        async with anyio.create_task_group() as tg:
            box: dict[str, Any] = {}

            async def load() -> None:
                box["results"] = await send_and_collect(
                    daemon.url, "slow", [{"i": i} for i in range(200)], timeout_s=90
                )

            tg.start_soon(load)
            await anyio.sleep(1)
            up = await anyio.to_thread.run_sync(daemon.agentctl, "--json", "scale", "slow", "4")
            assert up.returncode == 0, up.stderr
            scaled = json.loads(up.stdout)
            assert (scaled["agent"], scaled["before"], scaled["after"]) == ("slow", 1, 4), scaled
            await anyio.sleep(1)
            down = await anyio.to_thread.run_sync(daemon.agentctl, "--json", "scale", "slow", "1")
            assert down.returncode == 0, down.stderr
            assert json.loads(down.stdout)["after"] == 1
        results: dict[str, dict[str, Any]] = box["results"]
        return results

    results = anyio.run(scenario)
    assert len(results) == 200 and all(r["ok"] for r in results.values())
    assert len({r["replica"] for r in results.values()}) >= 3  # the new replicas took work
    ledger = anyio.run(ledger_entries, daemon.url, list(results))
    assert set(results) <= set(ledger)
    assert len(ps(daemon)["slow"]["replicas"]) == 1
    out = daemon.agentctl("scale", "slow", "9")
    assert out.returncode == 1 and "runs 0 to 4 replicas" in out.stderr


def test_poison_message_goes_to_the_dead_letters_and_replays_after_the_fix(
    daemon: DaemonProcess, files: dict[str, Path]
) -> None:
    out = daemon.agentctl("--json", "send", "poison", '{"poison": true}', "--wait")
    assert out.returncode == 0
    failed = json.loads(out.stdout)
    assert failed["ok"] is False and "cannot digest poison" in failed["error"]
    listed = json.loads(daemon.agentctl("--json", "dlq", "list", "--agent", "poison").stdout)
    (entry,) = [e for e in listed if e["message_id"] == failed["message_id"]]
    assert entry["deliveries"] == 3 and "cannot digest poison" in entry["error"]
    assert "cannot digest" in daemon.agentctl("dlq", "list").stdout
    files["fix"].touch()
    replay = daemon.agentctl("--json", "dlq", "replay", str(entry["seq"]))
    assert replay.returncode == 0, replay.stderr
    assert json.loads(replay.stdout)["message_id"] == failed["message_id"]

    def handled() -> bool:
        return failed["message_id"] in anyio.run(ledger_entries, daemon.url, [failed["message_id"]])

    eventually(handled, 20, "the replayed message to run")
    ledger = anyio.run(ledger_entries, daemon.url, [failed["message_id"]])
    assert ledger[failed["message_id"]]["output"]["handled"]
    remaining = json.loads(daemon.agentctl("--json", "dlq", "list", "--agent", "poison").stdout)
    assert all(e["seq"] != entry["seq"] for e in remaining)
    again = daemon.agentctl("dlq", "replay", str(entry["seq"]))
    assert again.returncode == 1 and "no dead letter" in again.stderr


def test_a_hung_replica_is_replaced_within_three_heartbeat_periods(daemon: DaemonProcess) -> None:
    period = 1.0  # [agents].heartbeat_s in write_config
    old = ps(daemon)["echo"]["replicas"][0]["pid"]
    os.kill(old, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        eventually(lambda: not pid_alive(old), 3 * period + 2.0, "the hung replica to be killed")
        detected_after = time.monotonic() - stopped_at
    finally:
        if pid_alive(old):
            os.kill(old, signal.SIGCONT)
    assert detected_after <= 3 * period + 1.0, detected_after  # + polling and scheduling

    def replaced() -> bool:
        (replica,) = ps(daemon)["echo"]["replicas"]
        return replica["pid"] not in (None, old) and replica["state"] == "running"

    eventually(replaced, 20, "a new echo replica")
    out = daemon.agentctl("send", "echo", '{"after": "hang"}', "--wait")
    assert json.loads(out.stdout) == {"after": "hang"}


def test_an_agent_spawns_another_and_it_ends_when_idle(daemon: DaemonProcess) -> None:
    out = daemon.agentctl("send", "parent", '{"greeting": "hello", "name": "ada"}', "--wait")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["answer"] == {"text": "hello, ada", "agent": result["child"]}
    assert result["child"].startswith("child-s")
    assert result["child"] in ps(daemon)
    eventually(lambda: result["child"] not in ps(daemon), 25, "the idle child to end")


def test_drain_stops_new_work_and_start_resumes(daemon: DaemonProcess) -> None:
    assert daemon.agentctl("drain", "echo").returncode == 0
    eventually(lambda: ps(daemon)["echo"]["replicas"][0]["state"] == "paused", 5, "echo to pause")
    sent = json.loads(daemon.agentctl("--json", "send", "echo", '{"x": 1}').stdout)
    time.sleep(1.0)
    # waiting in the inbox: never delivered (pending), or handed back by a pull the replica had
    # out when it paused (a nak: unacked until redelivered), and in neither case run
    backlog = ps(daemon)["echo"]["backlog"]
    assert backlog["pending"] + backlog["unacked"] == 1, backlog
    assert sent["message_id"] not in anyio.run(ledger_entries, daemon.url, [sent["message_id"]])
    assert daemon.agentctl("start", "echo").returncode == 0

    def ran() -> bool:
        return sent["message_id"] in anyio.run(ledger_entries, daemon.url, [sent["message_id"]])

    eventually(ran, 10, "the queued message to run after start")


def test_logs_show_each_replicas_output_and_top_draws_the_fleet(daemon: DaemonProcess) -> None:
    logs = daemon.agentctl("logs", "ordered", "-n", "5")
    assert logs.returncode == 0
    assert "ordered-0 | " in logs.stdout and "ordered-0 ready (version" in logs.stdout
    top = daemon.agentctl("top", "--iterations", "1", "--interval", "0.1")
    assert top.returncode == 0
    assert "agentd top:" in top.stdout and "ordered-0" in top.stdout
    assert "recent events:" in top.stdout


def test_every_lifecycle_decision_is_recorded_with_the_agent_version(
    daemon: DaemonProcess,
) -> None:
    from tests.harness import decision_records

    versions = {name: row["version"] for name, row in ps(daemon).items()}
    spawned = [
        r
        for r in decision_records(daemon.dir / "state", "agent.spawned")
        if r.get("agent") in versions
    ]
    assert spawned
    for record in spawned:
        assert record["lineage"]["agent_version"] == versions[record["agent"]]
    failed = decision_records(daemon.dir / "state", "agent.failed")
    assert any(r.get("agent") == "crashy" for r in failed)
