"""`agentctl nodes`: the cluster's hosts, their capacity and leases, and where agents run."""

from __future__ import annotations

from typing import Any

from agentd.cli._table import render_table

__all__ = ["render_nodes"]

_HEADERS = ["node", "placer", "cores", "memory", "gpus", "slots", "running", "lease", "placed"]


def render_nodes(view: dict[str, Any]) -> str:
    """One row per live host, then the placement by agent and anything left unplaced."""
    ttl = view["lease_ttl_s"]
    rows = []
    for node in view["nodes"]:
        gpus = node["gpus"]
        rows.append(
            [
                node["node"] + (" (this)" if node["node"] == view["node"] else ""),
                "yes" if node["placer"] else "",
                node["cores"],
                f"{node['memory_bytes'] / 2**30:.1f} GiB",
                ", ".join(g.get("name", "?") for g in gpus) if gpus else "-",
                node["slots"],
                len(node["replicas"]),
                f"{node['lease_age_s']:.1f}s/{ttl:g}s",
                " ".join(node["placed"]) or "-",
            ]
        )
    lines = [render_table(_HEADERS, rows) if rows else "no live hosts"]
    placer = view.get("placer")
    lines.append(
        f"placer: {placer['node']} (lease revision {placer['revision']})"
        if placer
        else "placer: none (the lease is free; a host takes it within a second)"
    )
    placement = view.get("placement", {})
    if placement:
        lines.append("")
        desired = view.get("desired", {})
        for agent, replicas in placement.items():
            where = ", ".join(f"{r}@{a[0]}" for r, a in replicas.items()) or "none"
            want = f" (desired {desired[agent]})" if agent in desired else ""
            lines.append(f"{agent}{want}: {where}")
    for agent, count in sorted(view.get("unplaced", {}).items()):
        lines.append(f"unplaced: {count} replica(s) of {agent}: no host has a free slot")
    return "\n".join(lines)
