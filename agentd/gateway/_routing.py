"""Which replica of a pool serves a call.

Affinity: the call's key (its agent plus a hash of its system prompt and tools, the part of the
prompt that repeats) ranks the replicas by rendezvous hashing, so the same prefix goes to the
same replica and finds its KV blocks in that replica's prefix cache. Load bound: a replica is
taken only while its outstanding requests stay under `load_factor` times the pool's average
(consistent hashing with bounded loads, Mirrokni et al.), else the next in rank order; a call
without a key goes to the least loaded replica. `RoundRobin` is the baseline it is measured
against.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence
from typing import Protocol

from agentd.gateway._upstreams import ReplicaEndpoint

__all__ = ["AffinityRouter", "RoundRobin", "ReplicaChooser"]


class ReplicaChooser(Protocol):
    """Picks a replica and counts outstanding requests (`started` / `finished`)."""

    def choose(
        self, endpoints: Sequence[ReplicaEndpoint], key: bytes | None
    ) -> ReplicaEndpoint: ...

    def started(self, replica: str) -> None: ...

    def finished(self, replica: str) -> None: ...


class _Outstanding:
    def __init__(self) -> None:
        self.outstanding: dict[str, int] = {}

    def started(self, replica: str) -> None:
        self.outstanding[replica] = self.outstanding.get(replica, 0) + 1

    def finished(self, replica: str) -> None:
        left = self.outstanding.get(replica, 0) - 1
        if left > 0:
            self.outstanding[replica] = left
        else:
            self.outstanding.pop(replica, None)


class AffinityRouter(_Outstanding):
    """Least outstanding requests with agent / prefix affinity under a load bound."""

    def __init__(self, load_factor: float = 1.25) -> None:
        super().__init__()
        self.load_factor = load_factor

    def choose(self, endpoints: Sequence[ReplicaEndpoint], key: bytes | None) -> ReplicaEndpoint:
        if not endpoints:
            raise ValueError("no endpoints to choose from")
        load = self.outstanding
        if key is None or len(endpoints) == 1:
            return min(endpoints, key=lambda e: load.get(e.replica, 0))
        total = sum(load.get(e.replica, 0) for e in endpoints) + 1  # this call included
        bound = max(1, math.ceil(self.load_factor * total / len(endpoints)))
        ranked = sorted(endpoints, key=lambda e: _rank(key, e.replica), reverse=True)
        for endpoint in ranked:
            if load.get(endpoint.replica, 0) < bound:
                return endpoint
        return min(ranked, key=lambda e: load.get(e.replica, 0))


class RoundRobin(_Outstanding):
    """Each call to the next replica in turn: the baseline, blind to prefixes."""

    def __init__(self) -> None:
        super().__init__()
        self._turn = itertools.count()

    def choose(self, endpoints: Sequence[ReplicaEndpoint], key: bytes | None) -> ReplicaEndpoint:
        if not endpoints:
            raise ValueError("no endpoints to choose from")
        return endpoints[next(self._turn) % len(endpoints)]


def _rank(key: bytes, replica: str) -> int:
    digest = hashlib.blake2b(key + b"\0" + replica.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
