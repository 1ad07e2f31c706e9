"""The durable trace path through the real daemon: worker processes publish decision records to
agentd.trace.<agent>, the daemon writes them to the hash-chained log and acks after commit; a
SIGKILL of the daemon loses and duplicates nothing."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest

from agentd.config import load_agent
from agentd.trace import DecisionLog
from tests.eventually import eventually
from tests.harness import (
    REPO,
    TEST_AGENTS,
    DaemonProcess,
    decision_records,
    nats_server,
    running_daemon,
    send_and_collect,
    write_config,
)

pytestmark = pytest.mark.integration


def sha256_file(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_workers_run_records_land_in_the_log_with_lineage(tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "scorer").symlink_to(TEST_AGENTS / "scorer")
    config = write_config(tmp_path, agents_dir=agents, extra="[autoscale]\nenabled = false\n")
    state = tmp_path / "state"
    with running_daemon(config) as daemon:
        results = anyio.run(
            send_and_collect, daemon.url, "scorer", [{"applicant_id": "A-1", "income": 80000}]
        )
        (result,) = results.values()
        assert result["ok"], result
        run_id = result["run_id"]

        def run_records() -> list[dict[str, Any]]:
            found = [r for r in decision_records(state) if r.get("run_id") == run_id]
            return found if any(r["kind"] == "run.finished" for r in found) else []

        records = eventually(run_records, 20, f"run.finished of {run_id}")
        assert daemon.stop() == 0, daemon.log()[-3000:]
    assert [r["kind"] for r in records] == ["run.started", "x.loan.scored", "run.finished"]
    version = load_agent(TEST_AGENTS / "scorer").version
    lineage = {
        "agent_version": version,
        "spec_hash": sha256_file(TEST_AGENTS / "scorer" / "agent.toml"),
        "graph_hash": sha256_file(TEST_AGENTS / "scorer" / "scorer_graph.py"),
    }
    for record in records:
        assert record["agent"] == "scorer"
        assert record["replica"].startswith("scorer-")
        assert record["lineage"] == lineage
        assert record["conversation_id"] == records[0]["conversation_id"]
    started, scored, finished = records
    assert started["inputs"]["attempt"] == 1 and started["inputs"]["message_id"]
    assert scored["decision"] == "approve" and scored["outputs"] == {"score": 0.8}
    assert scored["rule"] == "score >= 0.5"
    assert finished["decision"] == "ok" and finished["attributes"]["duration_s"] >= 0


def start_publishers(
    url: str, count: int, per_publisher: int, rate: float
) -> list[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.trace.publisher_process", url, f"worker{k}"]
            + [str(per_publisher), f"kill{k}", str(rate)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        for k in range(count)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
    return procs


def count_records(state: Path) -> tuple[int, int]:
    """(rows, distinct ids) of the publishers' records in the daemon's log."""
    db = sqlite3.connect(f"file:{state / 'decisions.db'}?mode=ro", uri=True)
    try:
        row = db.execute(
            "SELECT count(*), count(DISTINCT id) FROM records WHERE kind = 'x.test.kill'"
        ).fetchone()
    except sqlite3.OperationalError:  # not created yet
        return 0, 0
    finally:
        db.close()
    return int(row[0]), int(row[1])


async def unacked(url: str) -> int:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().consumer_info("AGENTD_TRACE", "trace-ingest")
        return int(info.num_ack_pending or 0)
    finally:
        await nc.close()


def test_sigkill_with_10000_records_in_flight_loses_and_duplicates_nothing(
    tmp_path: Path,
) -> None:
    total, publishers = 10_000, 4
    with nats_server(tmp_path / "js") as url:
        config = write_config(
            tmp_path,
            enabled=[],
            extra=(
                f'[bus]\nurl = "{url}"\n'
                "[trace]\ningest_ack_wait_s = 2.0\ningest_batch = 500\ncheckpoint_every = 2000\n"
            ),
        )
        state = tmp_path / "state"
        first = DaemonProcess(config)
        try:
            first.wait_ready()
            # 1,000 records/s each: still publishing when the daemon dies at 1,500 stored
            procs = start_publishers(url, publishers, total // publishers, rate=1000)
            at_kill = eventually(lambda: count_records(state)[0] >= 1500, 60, "1500 records")
            first.kill()  # SIGKILL, mid-stream
            at_kill = count_records(state)[0]
        finally:
            first.close()
        assert at_kill < total, "every record was stored before the kill: nothing was in flight"
        # fetched by the dead daemon, not acked: these come back after ack_wait
        in_hand = anyio.run(unacked, url)
        with running_daemon(config) as second:
            for proc in procs:
                # not communicate(): with a timeout it reads the pipe's file descriptor and
                # misses what readline() already buffered (the last line, from a fast process)
                proc.wait(timeout=120)
                assert proc.stdout is not None
                with proc.stdout:
                    out = proc.stdout.read()
                assert proc.returncode == 0 and out, f"rc {proc.returncode}: {out!r}"
                assert json.loads(out.splitlines()[-1])["dropped"] == 0
            eventually(lambda: count_records(state)[1] >= total, 60, f"{total} records")
            assert second.stop() == 0, second.log()[-3000:]
    rows, distinct = count_records(state)
    print(f"stored at the kill: {at_kill}, unacked then: {in_hand}")
    assert (rows, distinct) == (total, total), f"{at_kill} stored at the kill, {in_hand} unacked"
    db = sqlite3.connect(f"file:{state / 'decisions.db'}?mode=ro", uri=True)
    try:
        ids = {r[0] for r in db.execute("SELECT id FROM records WHERE kind = 'x.test.kill'")}
    finally:
        db.close()
    expected = {f"kill{k}-{i:06d}" for k in range(publishers) for i in range(total // publishers)}
    assert ids == expected
    with DecisionLog(state / "decisions.db", signing_key_path=state / "decision-log.key") as log:
        report = log.verify()
        assert report.ok, report.reason
