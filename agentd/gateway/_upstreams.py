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

    def pool_of(self, model: str) -> str | None:
        """The pool a request's `model` names, by pool name or served name, whether or not a
        replica is ready; None if no pool has that name."""
        ...

    def model_id(self, pool: str) -> str | None:
        """The model the pool serves (what /v1/models shows as its root), ready or not."""
        ...

    def endpoints(self, pool: str) -> list[ReplicaEndpoint]:
        """The pool's ready replicas (an unknown pool has none)."""
        ...

    def report_failure(self, replica: str, reason: str) -> None:
        """A request to `replica` failed before its first byte; the manager may probe it."""
        ...


class StaticUpstreams:
    """A fixed set of endpoints. Failures are counted and logged, never acted on.

    `loading` are replicas that name their pool (and its served name and model) but are not
    ready: a pool with only those has no endpoints, like a pool whose replicas still load.
    """

    def __init__(
        self, endpoints: Iterable[ReplicaEndpoint], *, loading: Iterable[ReplicaEndpoint] = ()
    ) -> None:
        self._pools: dict[str, list[ReplicaEndpoint]] = {}
        self._known: dict[str, list[ReplicaEndpoint]] = {}
        for endpoint in endpoints:
            self._pools.setdefault(endpoint.pool, []).append(endpoint)
            self._known.setdefault(endpoint.pool, []).append(endpoint)
        for endpoint in loading:
            self._known.setdefault(endpoint.pool, []).append(endpoint)
        self.failures: list[tuple[str, str]] = []

    def pool_names(self) -> list[str]:
        return list(self._known)

    def pool_of(self, model: str) -> str | None:
        if model in self._known:
            return model
        for pool, known in self._known.items():
            if any(e.served_name == model for e in known):
                return pool
        return None

    def model_id(self, pool: str) -> str | None:
        known = self._known.get(pool)
        return known[0].model if known else None

    def endpoints(self, pool: str) -> list[ReplicaEndpoint]:
        return list(self._pools.get(pool, ()))

    def report_failure(self, replica: str, reason: str) -> None:
        self.failures.append((replica, reason))
        log.warning("model replica %s failed: %s", replica, reason)
