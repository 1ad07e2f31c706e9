"""Benchmark: the durable trace path end to end, against raw batched SQLite with a hash chain.

Four worker processes each publish `--records / 4` decision records (~1 KB, as bench/trace_log
builds them) through `TracePublisher` to `agentd.trace.<agent>` on a real nats-server
(JetStream, file storage); this process runs the daemon's side, `TraceIngest` -> `LogWriter` ->
`DecisionLog` (hash chain, signed checkpoints every 1000 records, a `Redactor` with two secret
patterns, WAL, synchronous=NORMAL), with uvloop as the daemon does. The records are built
before the clock starts; the clock runs from "go" to the commit of the last record, so the rate
is what the whole path sustains: publish, ack, stream, fetch, check, write, ack.

The baseline is bench/trace_log's raw run (pre-serialized rows, SHA-256 chain, one
`executemany` per 100 rows, no indexes), measured in this run before and after the path (the
mean of the two is the baseline: a shared machine's load drifts). Afterwards the log must hold
every record exactly once and `verify()` must pass (`lost` counts what is missing).

With `--observers` the daemon's log-writer observers run too, as in a daemon: the metrics
(`AgentdMetrics.observe`) and the live decision feed (a redacted summary of each record published
on `agentd.evt.decision`); the clock then stops once they have seen the last record.

    PYTHONPATH=. python bench/trace.py [--records 40000] [--publishers 4] [--observers] [--smoke]

`--smoke` (400 records, 2 publishers, observers on) is what tests/test_hot_path_benches.py runs
so the bench cannot break unnoticed; its figures mean nothing.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import nats

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import nats_server  # noqa: E402
from trace_log import bench_raw, make_records  # noqa: E402

from agentd.bus import Subjects  # noqa: E402
from agentd.config import TraceConfig  # noqa: E402
from agentd.daemon._decision_feed import DecisionFeed  # noqa: E402
from agentd.metrics import AgentdMetrics  # noqa: E402
from agentd.trace import DecisionLog, LogWriter, Redactor, TraceIngest, TracePublisher  # noqa: E402

# what a worker publishes (its run records): only the daemon writes tool.* records
KIND = "run.finished"


async def publisher_main(url: str, agent: str, count: int) -> None:
    """One worker process: build the records, say ready, publish them all on "go"."""
    records = [r.model_copy(update={"agent": agent, "kind": KIND}) for r in make_records(count)]
    for record in records:
        record.body_json()  # serialized once up front, as a worker does when it records
    nc = await nats.connect(url)
    publisher = TracePublisher(nc, Subjects(), agent, replica=f"{agent}-1")
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(publisher.run)
            print("ready", flush=True)
            await anyio.to_thread.run_sync(sys.stdin.readline)
            started, cpu = time.perf_counter(), time.process_time()
            for record in records:
                await publisher.put(record)
            flushed = await publisher.close(timeout_s=120)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await nc.close()
    print(
        json.dumps(
            {
                "published": publisher.published,
                "retries": publisher.retries,
                "flushed": flushed,
                "publish_s": round(elapsed, 3),
                "cpu_s": round(cpu, 3),
            }
        ),
        flush=True,
    )


async def ingest_side(
    url: str,
    directory: Path,
    total: int,
    procs: list[subprocess.Popen[str]],
    observers: bool = False,
) -> tuple[float, float, float, dict[str, int]]:
    """Run the daemon's side until `total` records are committed; return (seconds, CPU
    seconds of this process, CPU seconds of nats-server, the ingest's counters)."""
    redactor = Redactor([r"sk-[A-Za-z0-9]{20,}", r"AKIA[0-9A-Z]{16}"], max_inline_bytes=16384)
    log = DecisionLog(
        directory / "decisions.db",
        signing_key_path=directory / "key",
        checkpoint_every=1000,
        redactor=redactor,
    )
    writer = LogWriter(log)
    nc = await nats.connect(url)
    try:
        ingest = TraceIngest(nc, Subjects(), writer, TraceConfig())
        observed, seen_all = [0], anyio.Event()
        if observers:
            metrics, feed = AgentdMetrics(), DecisionFeed(nc, Subjects(), redactor)

            async def observe(records: Any) -> None:
                metrics.observe(records)
                await feed(records)
                observed[0] += len(records)
                if observed[0] >= total:
                    seen_all.set()

            writer.add_observer(observe)
        async with anyio.create_task_group() as tg:
            await tg.start(writer.run)
            await tg.start(ingest.run)
            for proc in procs:
                assert proc.stdout is not None
                line = await anyio.to_thread.run_sync(proc.stdout.readline)
                assert line.strip() == "ready", line
            server_cpu = nats_server_cpu_s()
            started, cpu = time.perf_counter(), time.process_time()
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
                proc.stdin.close()
            with anyio.fail_after(300):
                while log.tree_size < total:
                    await writer.next_commit()
                if observers:
                    await seen_all.wait()
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            server_cpu = nats_server_cpu_s() - server_cpu
            await ingest.shutdown()
            tg.cancel_scope.cancel()
        stats = ingest.stats
    finally:
        await nc.close()
        await writer.close()
    return elapsed, cpu, server_cpu, stats


def nats_server_cpu_s() -> float:
    """CPU seconds (user + system) the nats-server child of this process has used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                name, rest = f.read().rsplit(")", 1)
        except OSError:
            continue
        fields = rest.split()
        if name.endswith("(nats-server") and int(fields[1]) == os.getpid():
            return (int(fields[11]) + int(fields[12])) / tick
    return 0.0


def finished_output(proc: subprocess.Popen[str]) -> str:
    """The rest of a process's output once it exits (communicate() with a timeout reads the
    pipe itself and would miss what readline() already buffered)."""
    proc.wait(timeout=120)
    assert proc.stdout is not None
    with proc.stdout:
        return proc.stdout.read()


def timed_raw(path: Path, bodies: list[str]) -> tuple[float, float]:
    cpu = time.process_time()
    elapsed = bench_raw(path, bodies)
    return elapsed, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=40_000)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--observers", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="a few records (figures mean nothing)")
    parser.add_argument("--publisher", nargs=3, metavar=("URL", "AGENT", "COUNT"))
    args = parser.parse_args()
    if args.publisher:
        url, agent, count = args.publisher
        anyio.run(publisher_main, url, agent, int(count))
        return 0
    if args.smoke:
        args.records, args.publishers, args.observers = 400, 2, True
    per = args.records // args.publishers
    total = per * args.publishers
    bodies = [r.body_json() for r in make_records(total)]
    with tempfile.TemporaryDirectory(prefix="bench-trace-") as tmp:
        base = Path(tmp)
        raw_before, raw_cpu_before = timed_raw(base / "raw1.db", bodies)
        with nats_server(base / "js") as url:
            procs = [
                subprocess.Popen(
                    [sys.executable, __file__, "--publisher", url, f"worker{k}", str(per)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=os.environ,
                )
                for k in range(args.publishers)
            ]
            try:
                elapsed, cpu, server_cpu, stats = anyio.run(
                    ingest_side,
                    url,
                    base,
                    total,
                    procs,
                    args.observers,
                    backend_options={"use_uvloop": True},
                )
                outs = [json.loads(finished_output(p).splitlines()[-1]) for p in procs]
            finally:
                for proc in procs:
                    if proc.poll() is None:
                        proc.kill()
        raw_after, raw_cpu_after = timed_raw(base / "raw2.db", bodies)
        with DecisionLog(base / "decisions.db", signing_key_path=base / "key") as log:
            (rows, distinct) = log._conn.execute(
                "SELECT count(*), count(DISTINCT id) FROM records WHERE kind = ?", (KIND,)
            ).fetchone()
            report = log.verify()
    raw_rate = total / ((raw_before + raw_after) / 2)
    raw_cpu_us = (raw_cpu_before + raw_cpu_after) / 2 / total * 1e6
    publishers_cpu = sum(o["cpu_s"] for o in outs)
    us = 1e6 / total
    rate = total / elapsed
    lost = total - distinct
    result = {
        "records": total,
        "smoke": args.smoke,
        "publishers": args.publishers,
        "observers": args.observers,
        "avg_body_bytes": round(sum(len(b.encode()) for b in bodies) / total),
        "path_records_per_s": round(rate),
        "raw_rows_per_s": round(raw_rate),
        "raw_rows_per_s_before_after": [round(total / raw_before), round(total / raw_after)],
        "ratio": round(rate / raw_rate, 3),
        # CPU time per record, robust to a shared machine's load: the daemon side (ingest +
        # writer threads), the publishers, nats-server; raw's CPU per row for comparison
        "cpu_us_per_record": {
            "daemon": round(cpu * us, 1),
            "publishers": round(publishers_cpu * us, 1),
            "nats_server": round(server_cpu * us, 1),
        },
        "raw_cpu_us_per_row": round(raw_cpu_us, 1),
        "cpu_ratio_daemon": round(raw_cpu_us / (cpu * us), 3),
        "lost": lost,
        "duplicates_stored": rows - distinct,
        "verify_ok": report.ok,
        "ingest": stats,
        "publisher_retries": sum(o["retries"] for o in outs),
        "publish_s": [o["publish_s"] for o in outs],
        "aim_met": rate >= 20_000 and rate / raw_rate >= 0.4 and lost == 0 and report.ok,
    }
    print(json.dumps(result))
    return 0 if lost == 0 and rows == distinct and report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
