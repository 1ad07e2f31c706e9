"""[gateway].budget_* are gone: the message that says what to write in limits.toml instead.

Token budgets used to be configured twice: `[gateway].budget_tokens` / `budget_window_s` /
`budgets` (enforced by the gateway) and limits.toml's `model = ...` limits (parsed, enforced
nowhere). Now limits.toml is the one place (agentd/gateway/README.md, "Token budgets"). A config
that still sets a budget must not start with that budget silently dropped, so
`budget_tokens` or `budgets` is an error that prints the limits.toml entries that give the same
budget; `budget_window_s` alone (it was in the example agentd.toml and set no budget) is
dropped with a warning.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["OLD_BUDGET_KEYS", "reject_old_budget_keys"]

log = logging.getLogger("agentd.config")

OLD_BUDGET_KEYS = ("budget_tokens", "budget_window_s", "budgets")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


def _entry(agent: str, pool: str, tokens: Any, window: float) -> str:
    try:
        per_minute = _number(float(tokens) * 60 / window)
        burst = _number(float(tokens))
    except (TypeError, ValueError, ZeroDivisionError):
        per_minute, burst = "TOKENS_PER_MINUTE", "TOKENS"
    return (
        f'[[limit]]\nagent = "{agent}"\nmodel = "{pool}"\n'
        f"per_minute = {per_minute}\nburst = {burst}"
    )


def reject_old_budget_keys(data: Any) -> Any:
    """`data` ([gateway]'s raw table) without the old keys; ValueError naming the key and the
    limits.toml entries to write when it set a budget."""
    if not isinstance(data, dict) or not any(k in data for k in OLD_BUDGET_KEYS):
        return data
    window_raw = data.get("budget_window_s", 60.0)
    window = float(window_raw) if isinstance(window_raw, int | float) and window_raw > 0 else 60.0
    entries: list[str] = []
    if data.get("budget_tokens") is not None:
        entries.append(_entry("*", "POOL", data["budget_tokens"], window))
    budgets = data.get("budgets") or {}
    if isinstance(budgets, dict):
        for key, tokens in budgets.items():
            agent, _, pool = str(key).partition("/")
            entries.append(_entry(agent or "AGENT", pool or "POOL", tokens, window))
    if not entries:
        log.warning(
            "[gateway].budget_window_s is no longer read (token budgets are limits.toml model "
            "limits now: [[limit]] agent, model, per_minute, burst); remove it"
        )
        return {k: v for k, v in data.items() if k not in OLD_BUDGET_KEYS}
    keys = ", ".join(f"[gateway].{k}" for k in OLD_BUDGET_KEYS if k in data)
    raise ValueError(
        f"{keys}: token budgets moved to the policy's limits.toml (one mechanism, reloaded "
        "with `agentctl policy reload`, kept across restarts, shared by a cluster). Remove "
        f"{keys} and add to limits.toml in [policy].dir"
        + (" (one entry per model pool for POOL)" if data.get("budget_tokens") else "")
        + ":\n"
        + "\n\n".join(entries)
    )
