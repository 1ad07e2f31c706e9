"""The cluster's three JetStream key-value buckets, and reading and writing them.

- `<prefix>_nodes`: one key per host, its capacity, expiring `lease_ttl_s` after the last write;
- `<prefix>_placer`: the placer lease (one key, the same TTL);
- `<prefix>_placement`: the placement document and the operators' desired counts (no TTL).

Documents are JSON; writes are compare-and-set on the revision they were read at.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyWrongLastSequenceError, NoKeysError, NotFoundError
from nats.js.kv import KeyValue

from agentd.bus import Subjects
from agentd.cluster._placement import NodeCapacity

__all__ = ["DESIRED_KEY", "PLACEMENT_KEY", "ClusterStore"]

log = logging.getLogger("agentd.cluster")

PLACEMENT_KEY = "placement"
DESIRED_KEY = "desired"


@dataclass(frozen=True)
class ClusterStore:
    nodes: KeyValue
    placer: KeyValue
    placement: KeyValue

    @classmethod
    async def open(
        cls, js: JetStreamContext, subjects: Subjects, *, ttl_s: float, replicas: int
    ) -> ClusterStore:
        """Create the buckets (idempotent) with `replicas` copies each."""

        async def bucket(name: str, description: str, ttl: float | None) -> KeyValue:
            return await js.create_key_value(
                KeyValueConfig(
                    bucket=name,
                    description=f"agentd cluster: {description}",
                    history=1,
                    ttl=ttl,
                    storage=StorageType.FILE,
                    replicas=replicas,
                )
            )

        return cls(
            nodes=await bucket(subjects.nodes_bucket, "cluster members", ttl_s),
            placer=await bucket(subjects.placer_bucket, "the placer lease", ttl_s),
            placement=await bucket(subjects.placement_bucket, "placement and desired counts", None),
        )

    async def live_nodes(self) -> dict[str, NodeCapacity]:
        """Every host whose node lease has not expired, with its capacity."""
        try:
            keys = await self.nodes.keys()
        except NoKeysError:
            return {}
        nodes = {}
        for key in keys:
            try:
                entry = await self.nodes.get(key)
            except NotFoundError:
                continue  # expired between the listing and the read
            try:
                nodes[key] = NodeCapacity.from_dict(json.loads(entry.value or b"{}"))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring node %s: unreadable capacity (%s)", key, exc)
        return nodes

    async def read(self, key: str) -> tuple[dict[str, Any], int]:
        """A placement-bucket document and its revision ({} and 0 when there is none)."""
        try:
            entry = await self.placement.get(key)
        except NotFoundError:
            return {}, 0
        data: dict[str, Any] = json.loads(entry.value or b"{}")
        return data, entry.revision or 0

    async def write(self, key: str, doc: dict[str, Any], revision: int) -> bool:
        """Write `doc` if `key` is still at `revision` (0: absent); False if someone wrote
        in between."""
        value = json.dumps(doc).encode()
        try:
            if revision:
                await self.placement.update(key, value, last=revision)
            else:
                await self.placement.create(key, value)
        except KeyWrongLastSequenceError:
            return False
        return True
