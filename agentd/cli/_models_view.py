"""`agentctl models`: model pools and their replicas, as a table for people."""

from __future__ import annotations

from typing import Any

from agentd.cli._table import render_table

__all__ = ["render_models"]

_HEADERS = [
    "pool",
    "replica",
    "state",
    "placement",
    "pid",
    "restarts",
    "running",
    "waiting",
    "kv_cache",
    "progress / error",
]


def render_models(pools: list[dict[str, Any]]) -> str:
    """One row per replica (one per pool without any), then each pool's last scaling step."""
    if not pools:
        return "no model pools configured ([models.<pool>] in agentd.toml)"
    rows: list[list[Any]] = []
    notes: list[str] = []
    for pool in pools:
        name = pool["pool"]
        bounds = pool["replicas"]
        title = f"{name} ({pool['desired']}/{bounds['min']}..{bounds['max']})"
        if not pool["members"]:
            rows.append([title, "-", "no replicas", "-", "-", "-", "-", "-", "-", "-"])
        for member in pool["members"]:
            load = member["load"] or {}
            kv = load.get("kv_cache_pct")
            rows.append(
                [
                    title,
                    member["name"],
                    member["state"],
                    _placement(member["placement"]),
                    member["pid"],
                    member["restarts"],
                    load.get("running"),
                    load.get("waiting"),
                    None if kv is None else f"{kv:.0f}%",
                    _progress(member),
                ]
            )
        decision = pool.get("last_decision")
        if decision:
            notes.append(f"{name}: last scaling {decision['change']}: {decision['reason']}")
        model = pool["model"] + (f"@{pool['revision']}" if pool.get("revision") else "")
        notes.append(f"{name}: serves {model} as {pool['served_name']!r}")
    return "\n".join([render_table(_HEADERS, rows), "", *notes])


def _placement(placement: dict[str, Any]) -> str:
    if placement["device"] == "gpu":
        return "gpu " + ",".join(str(g) for g in placement["gpus"])
    return f"cpu {placement['cores']}"


def _progress(member: dict[str, Any]) -> str | None:
    loading = member.get("loading")
    if loading:
        line = loading.get("last_line") or "(no output yet)"
        line = line if len(line) <= 50 else line[:49] + "…"
        return f"{loading['elapsed_s']:.0f}s/{loading['timeout_s']:.0f}s: {line}"
    error: str | None = member.get("error")
    if error and member["state"] != "ready":
        return error if len(error) <= 60 else error[:59] + "…"
    return None
