"""Benchmark: the audit read paths and the metrics feed, each against a raw baseline measured in
the same run on the same data.

- export: `agentd.audit.export_page` page after page (512 KiB pages, a fresh read-only
  connection per page, as `agentctl audit export` asks the daemon) against one raw
  `SELECT ... ORDER BY seq` over the same rows building the same JSON lines;
- observe: `AgentdMetrics.observe` (what the log writer's observer calls for every committed
  record) against the same counters updated the plain prometheus-client way,
  `counter.labels(...).inc()` per record and counter (no cache of labelled children);
- observe_wire: the same for replicas' records as the ingest hands them over (`WireRecord`s of
  `run.finished`, ~1 KB, whose verdict and attributes are read from their text), against the
  same baseline as observe;
- verify: `DecisionLog.verify` over the whole file (records per second; no raw baseline: it is
  the hash chain and Merkle checks themselves).

Prints one JSON object.

    PYTHONPATH=. python bench/audit_reads.py [--rows 50000] [--rounds 3] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from prometheus_client import Counter, Histogram

from agentd.audit import export_page
from agentd.metrics import AgentdMetrics
from agentd.trace import DecisionLog, DecisionRecord, WireRecord, parse_published

Figures = tuple[int, int, float]
KINDS = ("message.routed", "tool.requested", "tool.executed", "llm.call", "agent.spawned")


def make_records(count: int) -> list[DecisionRecord]:
    return [
        DecisionRecord(
            kind=KINDS[i % len(KINDS)],
            agent=f"agent-{i % 4}",
            run_id=f"run-{i // 5}",
            decision="ok",
            inputs={"text": "x" * 600, "n": i},
            attributes={"tool": "credit.score", "pool": "main", "tokens_in": 12, "tokens_out": 3},
        )
        for i in range(count)
    ]


def make_wire_records(count: int) -> list[WireRecord | DecisionRecord]:
    """`run.finished` records as a replica publishes them and the ingest accepts them."""
    wire: list[WireRecord | DecisionRecord] = []
    for i in range(count):
        record = DecisionRecord(
            kind="run.finished",
            agent=f"agent-{i % 4}",
            run_id=f"run-{i}",
            decision="ok",
            inputs={"text": "x" * 600, "n": i},
            attributes={"duration_s": 0.25},
        )
        wire.append(parse_published(f"agent-{i % 4}", record.body_json().encode()))
    assert all(isinstance(r, WireRecord) for r in wire)
    return wire


def time_export(path: Path) -> float:
    start = time.perf_counter()
    after, lines = 0, 0
    while True:
        page = export_page(path, after_seq=after)
        lines += len(page.lines)
        if page.next_after is None:
            break
        after = page.next_after
    return time.perf_counter() - start


def time_raw_select(path: Path) -> float:
    start = time.perf_counter()
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    for seq, prev_hash, hash_hex, body in conn.execute(
        "SELECT seq, prev_hash, hash, body FROM records ORDER BY seq"
    ):
        line = {"body": body, "hash": hash_hex, "prev_hash": prev_hash, "seq": seq}
        json.dumps(line, ensure_ascii=False, separators=(",", ":"))
    conn.close()
    return time.perf_counter() - start


class _UncachedMetrics(AgentdMetrics):
    def _child(self, counter: Counter | Histogram, *labels: str) -> Counter | Histogram:
        return counter.labels(*labels)


def time_observe(metrics: AgentdMetrics, records: Sequence[DecisionRecord | WireRecord]) -> float:
    start = time.perf_counter()
    metrics.observe(records)
    return time.perf_counter() - start


def compare(rows: int, rounds: int, ours: Callable[[], float], raw: Callable[[], float]) -> Figures:
    """Best rate of each over `rounds` (alternating which runs first), median ratio ours/raw."""
    ours_s, raw_s, ratios = [], [], []
    for i in range(rounds):
        first, second = (ours, raw) if i % 2 == 0 else (raw, ours)
        a, b = first(), second()
        o, r = (a, b) if i % 2 == 0 else (b, a)
        ours_s.append(o)
        raw_s.append(r)
        ratios.append(r / o)
    return round(rows / min(ours_s)), round(rows / min(raw_s)), round(statistics.median(ratios), 3)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="500 rows, one round (tests)")
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.rounds = 500, 1
    records = make_records(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        log = DecisionLog(directory / "d.db", signing_key_path=directory / "k")
        for i in range(0, len(records), 500):
            log.append_batch(records[i : i + 500])
        log.checkpoint()
        exported, raw_read, export_ratio = compare(
            args.rows, args.rounds, lambda: time_export(log.path), lambda: time_raw_select(log.path)
        )
        observed, plain, observe_ratio = compare(
            args.rows,
            args.rounds,
            lambda: time_observe(AgentdMetrics(), records),
            lambda: time_observe(_UncachedMetrics(), records),
        )
        wire = make_wire_records(args.rows)
        observed_wire, _, observe_wire_ratio = compare(
            args.rows,
            args.rounds,
            lambda: time_observe(AgentdMetrics(), wire),
            lambda: time_observe(_UncachedMetrics(), records),
        )
        start = time.perf_counter()
        report = log.verify()
        verify_s = time.perf_counter() - start
        assert report.ok and report.checked == args.rows, report
        log.close()
    result = {
        "rows": args.rows,
        "rounds": args.rounds,
        "export_records_per_s": exported,
        "raw_select_records_per_s": raw_read,
        "export_ratio": export_ratio,
        "observe_records_per_s": observed,
        "plain_labels_records_per_s": plain,
        "observe_ratio": observe_ratio,
        "observe_wire_records_per_s": observed_wire,
        "observe_wire_ratio": observe_wire_ratio,
        "verify_records_per_s": round(args.rows / verify_s),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
