"""How agentctl shows results to people (scripts use --json and get the raw result)."""

from __future__ import annotations

import json
from typing import Any

from agentd.cli._table import render_table

__all__ = ["render_agents", "render_approvals", "render_dlq", "render_ps", "render_status"]


def render_status(result: dict[str, Any]) -> str:
    lines = [
        f"agentd {result['version']}  pid {result['pid']}  up {result['uptime_s']:.0f}s",
        f"nats   {result['nats_url']}{' (embedded)' if result['embedded_nats'] else ''}",
        f"state  {result['state_dir']}",
        f"config {result['config']}",
        f"metrics {result.get('metrics_url') or 'off'}",
        "",
        render_table(["service", "state"], sorted(result["services"].items())),
    ]
    for err in result.get("spec_errors", []):
        lines.append(f"\nagent spec error: {err}")
    return "\n".join(lines)


def render_ps(agents: list[dict[str, Any]]) -> str:
    headers = [
        "agent",
        "version",
        "replica",
        "pid",
        "state",
        "uptime_s",
        "restarts",
        "runs",
        "done",
        "backlog",
        "scaled_by",
        "last_error",
    ]
    rows = []
    for agent in agents:
        backlog = agent["backlog"]["pending"] + agent["backlog"]["unacked"]
        owner = agent.get("scaled_by", "-")  # autoscaler | pinned:<operator> | operator
        if not agent["replicas"]:
            rows.append(
                [
                    agent["agent"],
                    agent["version"],
                    "-",
                    "-",
                    agent["state"],
                    "-",
                    "-",
                    0,
                    "-",
                    backlog,
                    owner,
                    agent["error"],
                ]
            )
        for r in agent["replicas"]:
            rows.append(
                [
                    agent["agent"],
                    r["version"],
                    r["name"],
                    r["pid"],
                    r["state"],
                    r["uptime_s"],
                    r["restarts"],
                    r["inflight"],
                    r["completed"],
                    backlog,
                    owner,
                    _short(r["last_error"]),
                ]
            )
    return render_table(headers, rows)


def render_dlq(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "no dead letters"
    rows = [
        [
            e["seq"],
            e["agent"],
            e.get("message_id"),
            e["deliveries"],
            _short(e.get("error")),
            _short(json.dumps(e.get("payload")), 40),
        ]
        for e in entries
    ]
    return render_table(["seq", "agent", "message", "tries", "error", "payload"], rows)


def render_approvals(waiting: list[dict[str, Any]]) -> str:
    if not waiting:
        return "no tool calls are waiting for approval"
    rows = [
        [
            w["id"],
            w["agent"],
            w["tool"],
            _short(json.dumps(w["args"]), 50),
            w.get("run_id"),
            w.get("trace_id"),
            w.get("rule"),
            (f"{w['taint_tool']} {w['taint_record']}" if w.get("tainted") else "-"),
        ]
        for w in waiting
    ]
    headers = ["id", "agent", "tool", "args", "run", "trace", "rule", "tainted by"]
    return render_table(headers, rows)


def _short(text: str | None, width: int = 60) -> str | None:
    if text is None:
        return None
    return text if len(text) <= width else text[: width - 1] + "…"


def render_agents(rows: list[dict[str, Any]]) -> str:
    """`agentctl agents`: configured, spawned and registered agents, with leases."""
    table = []
    for row in rows:
        lease = row.get("lease_expires_in_s")
        table.append(
            [
                row["agent"],
                row["kind"],
                row.get("version") or "-",
                row.get("replicas", "-"),
                row.get("state", "registered"),
                "-" if lease is None else f"{lease:.1f}s",
                (row.get("public_key") or "-")[:12],
            ]
        )
    if not table:
        return "no agents"
    return render_table(["agent", "kind", "version", "replicas", "state", "lease", "key"], table)
