"""The autoscaler: each agent between its replicas.min and max, on its backlog.

Load = (pending + unacked messages) / (replicas x concurrency). Above `scale_up_at` it adds the
replicas the backlog needs (at most doubling at once); below `scale_down_at` it removes one
(scaling down drains first). Hysteresis comes from the gap between the two thresholds, and after
any change an agent is left alone for `cooldown_s`. Every decision records its inputs and reason.
An agent an operator scaled by hand is pinned: the autoscaler leaves it alone until
`agentctl autoscale NAME on` (agentd.daemon._scale_owner says why).
"""

from __future__ import annotations

import logging
import math
import time

import anyio
from anyio.abc import TaskStatus

from agentd.cluster import Cluster
from agentd.config import AutoscaleConfig
from agentd.daemon._fleet import AgentFleet
from agentd.daemon._scale_owner import is_autoscaled
from agentd.errors import AgentdError

__all__ = ["Autoscaler", "desired_replicas"]

log = logging.getLogger("agentd.autoscaler")


def desired_replicas(
    *, current: int, backlog: int, concurrency: int, low: int, high: int, cfg: AutoscaleConfig
) -> tuple[int, str]:
    """The replica count the backlog asks for, and why (pure: the policy, testable alone)."""
    capacity = max(current, 1) * concurrency
    load = backlog / capacity
    if current < low:
        return low, f"below replicas.min ({current} < {low})"
    if load > cfg.scale_up_at and current < high:
        needed = math.ceil(backlog / (concurrency * cfg.scale_up_at))
        target = min(high, max(current + 1, min(needed, max(current, 1) * 2)))
        return (
            target,
            f"load {load:.2f} > {cfg.scale_up_at} (backlog {backlog}, capacity {capacity})",
        )
    if load < cfg.scale_down_at and current > low:
        return current - 1, f"load {load:.2f} < {cfg.scale_down_at} (backlog {backlog})"
    return current, f"load {load:.2f} within [{cfg.scale_down_at}, {cfg.scale_up_at}]"


class Autoscaler:
    def __init__(
        self, fleet: AgentFleet, cfg: AutoscaleConfig, *, cluster: Cluster | None = None
    ) -> None:
        self._fleet = fleet
        # in a cluster only the placer decides, from the cluster-wide replica count
        self._cluster = cluster
        self._cfg = cfg
        self._last_change: dict[str, float] = {}
        self._stopped = anyio.Event()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while not self._stopped.is_set():
            with anyio.move_on_after(self._cfg.interval_s):
                await self._stopped.wait()
            if self._stopped.is_set():
                return
            try:
                await self.tick()
            except Exception:
                log.exception("autoscaler tick failed")

    async def shutdown(self) -> None:
        self._stopped.set()

    async def tick(self) -> None:
        now = time.monotonic()
        cluster = self._cluster
        if cluster is not None and not cluster.is_placer:
            return
        for name, record in list(self._fleet.agents.items()):
            spec = record.agent.spec
            if not is_autoscaled(record, self._cfg) or record.state != "running":
                continue
            if now - self._last_change.get(name, -math.inf) < self._cfg.cooldown_s:
                continue
            backlog = await self._fleet.backlog(name)
            current = len(record.replicas) if cluster is None else cluster.placed(name)
            target, reason = desired_replicas(
                current=current,
                backlog=backlog["pending"] + backlog["unacked"],
                concurrency=spec.concurrency,
                low=spec.replicas.min,
                high=spec.replicas.max,
                cfg=self._cfg,
            )
            if target == current:
                continue
            if not is_autoscaled(record, self._cfg):  # pinned while we read the backlog
                continue
            self._last_change[name] = now
            log.info("autoscaling %s %d -> %d: %s", name, current, target, reason)
            try:
                await self._fleet.scale(
                    name,
                    target,
                    reason=f"autoscaler: {reason}",
                    **backlog,
                    replicas=current,
                    concurrency=spec.concurrency,
                )
            except AgentdError as exc:
                log.warning("autoscaling %s failed: %s", name, exc)
