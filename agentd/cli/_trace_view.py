"""How agentctl shows the decision log to people: trace trees, runs, followed decisions."""

from __future__ import annotations

import time
from typing import Any

from agentd.audit import TraceNode, build_trace_tree, token_counts
from agentd.cli._table import render_table
from agentd.trace import DAEMON_SOURCE, DecisionRecord

__all__ = ["format_time", "render_decision_line", "render_runs", "render_trace"]

_DURATION_KEYS = ("latency_s", "duration_s", "elapsed_s")


def format_time(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def _short(value: str | None, width: int) -> str:
    if not value:
        return ""
    return value if len(value) <= width else value[: width - 1] + "…"


def _subject_of(record: DecisionRecord) -> str:
    """What a decision was about: a tool, a model pool, a message's route, a verb."""
    attributes = record.attributes or {}
    inputs = record.inputs if isinstance(record.inputs, dict) else {}
    for key in ("tool", "pool", "model", "verb"):
        value = attributes.get(key)
        if isinstance(value, str):
            return value
    if record.kind.startswith("message.") and inputs:
        return f"{inputs.get('from', '?')}→{inputs.get('to', record.agent or '?')}"
    return record.agent or ""


def _details(record: DecisionRecord) -> str:
    parts: list[str] = []
    if record.decision:
        parts.append(record.decision)
    attributes = record.attributes or {}
    for key in _DURATION_KEYS:
        value = attributes.get(key)
        if isinstance(value, int | float):
            parts.append(f"{value:.3f}s")
            break
    tokens = token_counts(record)
    if tokens is not None:
        parts.append(f"tokens {tokens[0]}/{tokens[1]}")
    if record.rule:
        parts.append(f"rule: {_short(record.rule, 60)}")
    if record.reason:
        parts.append(f"why: {_short(record.reason, 60)}")
    if record.operator:
        parts.append(f"by {record.operator}")
    if attributes.get("trust") == "untrusted":
        parts.append("untrusted result")
    if attributes.get("tainted") is True:  # the daemon's own taint record of the run
        parts.append(f"tainted by {attributes.get('taint_record')}")
    if record.source and record.source != DAEMON_SOURCE:  # written by an agent, not the daemon
        parts.append(f"from {record.source}")
    lineage = record.lineage
    if lineage is not None:
        bits = [
            f"{name}={_short(value, 12)}"
            for name, value in (
                ("agent", lineage.agent_version),
                ("model", lineage.model_id),
                ("rev", lineage.model_revision),
                ("prompt", lineage.prompt_hash),
                ("policy", lineage.policy_version),
            )
            if value
        ]
        if bits:
            parts.append("[" + " ".join(bits) + "]")
    return "  ".join(parts)


def render_decision_line(record: DecisionRecord, *, offset: float | None = None) -> str:
    """One line for one decision: time (or offset), kind, what about, verdict and why."""
    when = (
        f"+{offset:.3f}s"
        if offset is not None
        else time.strftime("%H:%M:%S", time.gmtime(record.ts))
    )
    who = f"[{record.agent}]" if record.agent else ""
    return f"{when}  {record.kind:<22} {who} {_subject_of(record)}  {_details(record)}".rstrip()


def render_trace(result: dict[str, Any]) -> str:
    """The `trace` verb's reply as a tree, with offsets from the first decision."""
    seqs: dict[str, int] = {}
    records = []
    for raw in result["records"]:
        body = dict(raw)
        seq = body.pop("seq", None)
        record = DecisionRecord.model_validate(body)
        if isinstance(seq, int):
            seqs[record.id] = seq
        records.append(record)
    tree = build_trace_tree(result["id"], records)
    t0 = tree.start
    tokens_in = tokens_out = 0
    for record in records:
        counts = token_counts(record)
        if counts is not None:
            tokens_in, tokens_out = tokens_in + counts[0], tokens_out + counts[1]
    header = (
        f"{'/'.join(result['matched'])} {result['id']}: {len(records)} decisions,"
        f" {tree.end - t0:.3f}s from {format_time(t0)}"
    )
    if tokens_in or tokens_out:
        header += f", tokens in/out {tokens_in}/{tokens_out}"
    lines = [header]
    if result.get("truncated"):
        lines.append("(truncated: only the first records are shown; use --json --limit)")
    _render_node(tree, "", lines, t0, seqs)
    return "\n".join(lines)


def _node_label(node: TraceNode, t0: float) -> str:
    count = sum(1 for _ in node.walk())
    agents = sorted({r.agent for r in node.walk() if r.agent})
    what = "run" if node.kind == "run" else "span"
    return (
        f"+{node.start - t0:.3f}s  {what} {node.key}  {','.join(agents)}"
        f"  {node.end - node.start:.3f}s  ({count} decisions)"
    )


def _render_node(
    node: TraceNode, indent: str, lines: list[str], t0: float, seqs: dict[str, int]
) -> None:
    items: list[tuple[float, DecisionRecord | TraceNode]] = [(r.ts, r) for r in node.records]
    items += [(c.start, c) for c in node.children]
    items.sort(key=lambda pair: pair[0])
    for index, (_, item) in enumerate(items):
        last = index == len(items) - 1
        branch, carry = ("└─ ", "   ") if last else ("├─ ", "│  ")
        if isinstance(item, DecisionRecord):
            seq = seqs.get(item.id)
            prefix = f"#{seq} " if seq is not None else ""
            lines.append(
                f"{indent}{branch}{prefix}{render_decision_line(item, offset=item.ts - t0)}"
            )
        else:
            lines.append(f"{indent}{branch}{_node_label(item, t0)}")
            _render_node(item, indent + carry, lines, t0, seqs)


def render_runs(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return "no runs"
    rows = [
        [
            format_time(r.get("routed_at") or r.get("started_at")),
            r.get("agent"),
            r["status"],
            None if r.get("duration_s") is None else f"{r['duration_s']:.3f}s",
            r.get("run_id"),
            r.get("message_id"),
            r.get("conversation_id"),
            r.get("replica"),
            _short(r.get("error"), 40) or None,
        ]
        for r in runs
    ]
    headers = ["at", "agent", "status", "took", "run", "message", "conversation", "replica"]
    return render_table([*headers, "error"], rows)
