"""The autoscaling rule for one model pool: pure, so it can be tested without a server."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agentd.config import PoolAutoscaleConfig
from agentd.inference._load import ReplicaLoad

__all__ = ["ScaleDecision", "decide_scale"]


@dataclass(frozen=True, kw_only=True)
class ScaleDecision:
    """Where a pool should go and why; `inputs` is what the decision record carries."""

    direction: Literal["up", "down", "hold"]
    before: int
    after: int
    reason: str
    inputs: dict[str, Any]


def decide_scale(
    loads: Sequence[ReplicaLoad],
    *,
    replicas: int,
    min_replicas: int,
    max_replicas: int,
    rule: PoolAutoscaleConfig,
    since_last_change_s: float | None,
) -> ScaleDecision:
    """Decide one step (up by one, down by one, or hold) for a pool with `replicas` now.

    `loads` are the ready replicas' readings; replicas still loading count toward `replicas`
    but not toward the averages, so a pool that is already growing does not grow again for the
    same queue. Within the cooldown after the last change (`since_last_change_s`, None if
    never) the pool holds. Below `min_replicas` it always goes up; above `max_replicas`, down.
    """
    n = len(loads)
    waiting = sum(load.waiting for load in loads) / n if n else 0.0
    running = sum(load.running for load in loads) / n if n else 0.0
    kv_cache = max((load.kv_cache_usage for load in loads), default=0.0)
    inputs: dict[str, Any] = {
        "replicas": replicas,
        "reporting": n,
        "waiting_per_replica": round(waiting, 3),
        "running_per_replica": round(running, 3),
        "kv_cache_max": round(kv_cache, 4),
        "min": min_replicas,
        "max": max_replicas,
        "since_last_change_s": None if since_last_change_s is None else round(since_last_change_s),
    }

    def step(direction: Literal["up", "down", "hold"], reason: str) -> ScaleDecision:
        after = replicas + {"up": 1, "down": -1, "hold": 0}[direction]
        return ScaleDecision(
            direction=direction, before=replicas, after=after, reason=reason, inputs=inputs
        )

    if replicas < min_replicas:
        return step("up", f"below the minimum of {min_replicas}")
    if replicas > max_replicas:
        return step("down", f"above the maximum of {max_replicas}")
    if since_last_change_s is not None and since_last_change_s < rule.cooldown_s:
        return step("hold", f"cooling down ({rule.cooldown_s:g}s after the last change)")
    if n == 0:
        return step("hold", "no ready replica reports its load")
    if waiting >= rule.up_waiting or kv_cache >= rule.up_kv_cache:
        if replicas >= max_replicas:
            return step("hold", f"overloaded, but at the maximum of {max_replicas}")
        why = (
            f"{waiting:.1f} waiting per replica >= {rule.up_waiting:g}"
            if waiting >= rule.up_waiting
            else f"KV cache {kv_cache:.0%} >= {rule.up_kv_cache:.0%}"
        )
        return step("up", why)
    idle = (
        waiting <= rule.down_waiting
        and running <= rule.down_running
        and kv_cache <= rule.down_kv_cache
    )
    if idle and replicas > min_replicas and n == replicas:
        return step(
            "down",
            f"{waiting:.1f} waiting, {running:.1f} running per replica, KV cache {kv_cache:.0%}: "
            "below every scale-down threshold",
        )
    return step("hold", "load between the thresholds")
