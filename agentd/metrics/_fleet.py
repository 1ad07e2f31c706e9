"""Gauges of the fleet's state, served from the latest sample (swapped in whole, under a lock),
so a scrape never waits for the daemon's event loop and never sees a half-updated label set."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["FleetCollector"]


class FleetCollector(Collector):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replicas: dict[tuple[str, str], int] = {}
        self._backlog: dict[tuple[str, str], int] = {}
        self._desired: dict[str, int] = {}

    def update(self, agents: Sequence[Mapping[str, Any]]) -> None:
        """Take a sample: `agentctl ps` rows (agent, desired, backlog, replicas)."""
        replicas: dict[tuple[str, str], int] = {}
        backlog: dict[tuple[str, str], int] = {}
        desired: dict[str, int] = {}
        for row in agents:
            name = str(row["agent"])
            desired[name] = int(row.get("desired") or 0)
            for state in ("pending", "unacked"):
                backlog[(name, state)] = int((row.get("backlog") or {}).get(state, 0))
            for replica in row.get("replicas", ()):
                key = (name, str(replica["state"]))
                replicas[key] = replicas.get(key, 0) + 1
        with self._lock:
            self._replicas, self._backlog, self._desired = replicas, backlog, desired

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            replicas, backlog, desired = self._replicas, self._backlog, self._desired
        family = GaugeMetricFamily(
            "agentd_replicas", "Agent replicas by state", labels=["agent", "state"]
        )
        for (agent, state), count in sorted(replicas.items()):
            family.add_metric([agent, state], count)
        yield family
        family = GaugeMetricFamily(
            "agentd_replicas_desired", "Replicas each agent should run", labels=["agent"]
        )
        for agent, count in sorted(desired.items()):
            family.add_metric([agent], count)
        yield family
        family = GaugeMetricFamily(
            "agentd_inbox_backlog_messages",
            "Messages in an agent's inbox: waiting (pending) or being worked on (unacked)",
            labels=["agent", "state"],
        )
        for (agent, state), count in sorted(backlog.items()):
            family.add_metric([agent, state], count)
        yield family
