"""Where the gateway sends a pool's requests: the pool manager's ready replicas.

The gateway codes against `Upstreams`, the part of the model pool manager it needs; the daemon
hands it the real manager. `StaticUpstreams` serves a fixed list, for tests and the benchmark.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

# one definition, the pool manager's: the gateway reads what it hands out
from agentd.inference import ReplicaEndpoint

__all__ = ["ReplicaEndpoint", "StaticUpstreams", "Upstreams"]

log = logging.getLogger("agentd.gateway")


class Upstreams(Protocol):
    """The model pools as the gateway sees them (the pool manager implements this)."""

    def pool_names(self) -> list[str]: ...

    def endpoints(self, pool: str) -> list[ReplicaEndpoint]:
        """The pool's ready replicas (an unknown pool has none)."""
        ...

    def report_failure(self, replica: str, reason: str) -> None:
        """A request to `replica` failed before its first byte; the manager may probe it."""
        ...


class StaticUpstreams:
    """A fixed set of endpoints. Failures are counted and logged, never acted on."""

    def __init__(self, endpoints: Iterable[ReplicaEndpoint]) -> None:
        self._pools: dict[str, list[ReplicaEndpoint]] = {}
        for endpoint in endpoints:
            self._pools.setdefault(endpoint.pool, []).append(endpoint)
        self.failures: list[tuple[str, str]] = []

    def pool_names(self) -> list[str]:
        return list(self._pools)

    def endpoints(self, pool: str) -> list[ReplicaEndpoint]:
        return list(self._pools.get(pool, ()))

    def report_failure(self, replica: str, reason: str) -> None:
        self.failures.append((replica, reason))
        log.warning("model replica %s failed: %s", replica, reason)
