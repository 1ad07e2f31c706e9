"""Leases in JetStream key-value buckets: a host's membership and the placer's role.

Both are keys in buckets whose entries live `ttl` seconds (the bucket's max age) unless
rewritten. A host renews its node key every ttl/3; a host that dies stops renewing and its key
expires. The placer lease is taken with `create` (only if no live holder) and renewed with
`update` against the revision the holder last wrote (compare-and-set): a holder that was silent
past the TTL finds its revision gone and knows it lost the lease, so two placers never write at
once for longer than one renewal.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

__all__ = ["NodeLease", "PlacerLease"]

log = logging.getLogger("agentd.cluster")


class NodeLease:
    """This host's key in the nodes bucket, rewritten with its capacity every ttl/3."""

    def __init__(self, kv: KeyValue, node: str, ttl_s: float) -> None:
        self._kv = kv
        self.node = node
        self.ttl_s = ttl_s
        self._renewed = 0.0  # monotonic time of the last successful write

    async def renew(self, capacity: dict[str, Any]) -> bool:
        try:
            await self._kv.put(self.node, json.dumps(capacity).encode())
        except Exception as exc:  # a NATS node down, a reconnect: the next renewal may work
            log.warning("node lease of %s not renewed: %s", self.node, exc)
            return False
        self._renewed = time.monotonic()
        return True

    @property
    def valid(self) -> bool:
        """True while the last renewal is younger than the TTL: others still count this host
        alive. Past it, the placer may have moved this host's replicas: stop them."""
        return self._renewed > 0 and time.monotonic() - self._renewed < self.ttl_s

    async def release(self) -> None:
        """Leave at once (a clean shutdown): the placer moves this host's replicas now, not
        after the TTL."""
        try:
            await self._kv.delete(self.node)
        except Exception as exc:
            log.warning("node lease of %s not released: %s", self.node, exc)


class PlacerLease:
    """The placer role: one key, created by whoever finds it free, renewed by compare-and-set."""

    KEY = "placer"

    def __init__(self, kv: KeyValue, node: str, incarnation: str, ttl_s: float) -> None:
        self._kv = kv
        self.node = node
        self.incarnation = incarnation
        self.ttl_s = ttl_s
        self.revision: int | None = None
        self._renewed = 0.0

    @property
    def held(self) -> bool:
        # a holder that could not renew for a whole TTL may have been replaced
        return self.revision is not None and time.monotonic() - self._renewed < self.ttl_s

    def _value(self) -> bytes:
        return json.dumps(
            {"node": self.node, "incarnation": self.incarnation, "renewed_at": time.time()}
        ).encode()

    async def tick(self) -> str | None:
        """Take the lease if it is free, renew it if it is ours and due. Returns "acquired" or
        "lost" when the role changed hands, else None."""
        if self.revision is not None and not self.held:
            self.revision = None
            return "lost"
        if self.revision is None:
            try:
                self.revision = await self._kv.create(self.KEY, self._value())
            except KeyWrongLastSequenceError:
                return None  # someone holds it
            self._renewed = time.monotonic()
            return "acquired"
        if time.monotonic() - self._renewed >= self.ttl_s / 3:
            try:
                self.revision = await self._kv.update(self.KEY, self._value(), last=self.revision)
            except KeyWrongLastSequenceError:
                self.revision = None  # expired and taken by another host meanwhile
                return "lost"
            self._renewed = time.monotonic()
        return None

    async def release(self) -> None:
        if self.revision is None:
            return
        try:
            # only our own revision: never delete a successor's lease
            await self._kv.delete(self.KEY, last=self.revision)
        except (KeyWrongLastSequenceError, NotFoundError):
            pass
        except Exception as exc:
            log.warning("placer lease not released: %s", exc)
        self.revision = None

    async def holder(self) -> dict[str, Any] | None:
        try:
            entry = await self._kv.get(self.KEY)
        except NotFoundError:
            return None
        value: dict[str, Any] = json.loads(entry.value or b"{}")
        value["revision"] = entry.revision
        return value
