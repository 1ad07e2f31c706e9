"""The placer role: whoever holds the placer lease writes where every agent replica runs.

Each tick it takes or renews the lease; while it holds it, it reads the live hosts, the desired
counts and the last placement, runs `place()`, and writes the result (compare-and-set). Every
change is a decision record: the lease changing hands, hosts joining and lost, and each agent's
new placement with its inputs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from agentd.cluster._leases import PlacerLease
from agentd.cluster._placement import (
    AgentDemand,
    NodeCapacity,
    PlaceResult,
    decode_placement,
    encode_placement,
    place,
)
from agentd.cluster._store import DESIRED_KEY, PLACEMENT_KEY, ClusterStore

__all__ = ["Placer"]

log = logging.getLogger("agentd.cluster")

RecordFn = Callable[..., None]


class Placer:
    """This host's side of the placer role; `tick()` once per cluster tick."""

    def __init__(
        self,
        store: ClusterStore,
        lease: PlacerLease,
        demands: Callable[[], dict[str, AgentDemand]],
        record: RecordFn,
    ) -> None:
        self._store = store
        self.lease = lease
        self.node = lease.node
        self._demands = demands
        self._record = record
        self._known_nodes: dict[str, str] = {}  # node -> incarnation, as last placed over
        # the previous listing of hosts: one listing during a NATS fail-over can be short
        self._last_listing: dict[str, NodeCapacity] = {}

    async def tick(self) -> None:
        change = await self.lease.tick()
        if change == "acquired":
            log.info("%s holds the placer lease (revision %s)", self.node, self.lease.revision)
            self._known_nodes, self._last_listing = {}, {}
            self._record(
                "cluster.placer_acquired",
                decision="acquired",
                reason=f"{self.node} took the free placer lease",
                inputs={"node": self.node, "revision": self.lease.revision},
            )
        elif change == "lost":
            log.warning("%s lost the placer lease", self.node)
            self._record(
                "cluster.placer_lost",
                decision="lost",
                reason="the placer lease could not be renewed within its TTL",
                inputs={"node": self.node},
            )
        if self.lease.held:
            await self._place()

    async def _place(self) -> None:
        listed = await self._store.live_nodes()
        if self.node not in listed:
            # our own lease is renewed (we would not place otherwise): the listing is wrong, as
            # it can be while a NATS node fails over; placing from it would move everything
            log.warning("the node listing lacks %s itself; not placing this tick", self.node)
            return
        # a host is lost after two listings without it, not one: the last listing vouches for
        # it once more
        nodes = {**self._last_listing, **listed}
        self._last_listing = listed
        doc, revision = await self._store.read(PLACEMENT_KEY)
        desired, _ = await self._store.read(DESIRED_KEY)
        current = decode_placement(doc.get("agents", {}))
        if not self._known_nodes:  # a new placer: the hosts its predecessor placed on
            self._known_nodes = {
                a.node: a.incarnation for replicas in current.values() for a in replicas.values()
            }
        self._note_membership(nodes)
        demands = {}
        for name, demand in self._demands().items():
            count = int(desired.get(name, demand.desired))
            demands[name] = AgentDemand(
                name, min(max(count, 0), demand.max), demand.max, demand.pool
            )
        result = place(demands, nodes, current)
        if not result.changed and result.unplaced == doc.get("unplaced", {}) and revision:
            return
        body = {
            "placer": self.node,
            "placer_revision": self.lease.revision,
            "placed_at": time.time(),
            "agents": encode_placement(result.placement),
            "unplaced": result.unplaced,
        }
        if await self._store.write(PLACEMENT_KEY, body, revision):
            self._record_placed(result, demands, nodes)
        # else another placer wrote meanwhile: recompute next tick

    def _record_placed(
        self,
        result: PlaceResult,
        demands: Mapping[str, AgentDemand],
        nodes: Mapping[str, NodeCapacity],
    ) -> None:
        loads = {n: len(c.replicas) for n, c in nodes.items()}
        for name in sorted(result.changed):
            moved = result.moved.get(name, [])
            replicas = result.placement.get(name, {})
            wanted = demands[name].desired if name in demands else 0
            if moved:
                reason = f"moved {', '.join(moved)} from lost hosts"
            elif name in demands:
                reason = f"{len(replicas)} of {wanted} wanted"
            else:
                reason = "no longer placed"
            self._record(
                "cluster.placed",
                agent=name,
                # the decision is short (a record field of 64 characters); inputs say where
                decision=f"{len(replicas)} replicas on {len({a.node for a in replicas.values()})}"
                " hosts",
                reason=reason,
                inputs={
                    "placement": {r: a.node for r, a in sorted(replicas.items())},
                    "nodes": sorted(nodes),
                    "running": loads,
                    "desired": wanted,
                    "unplaced": result.unplaced.get(name, 0),
                },
            )

    def _note_membership(self, nodes: Mapping[str, NodeCapacity]) -> None:
        seen = {n: c.incarnation for n, c in nodes.items()}
        for node, inc in seen.items():
            if self._known_nodes.get(node) != inc:
                self._record(
                    "cluster.node_joined",
                    decision="joined",
                    reason=f"{node} holds a node lease (incarnation {inc})",
                    inputs=nodes[node].to_dict(),
                )
        for node, inc in self._known_nodes.items():
            if node not in seen:
                self._record(
                    "cluster.node_lost",
                    decision="lost",
                    reason=f"the node lease of {node} lapsed or was released",
                    inputs={"node": node, "incarnation": inc},
                )
        self._known_nodes = seen
