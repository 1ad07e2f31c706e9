"""One host's part in a cluster: its node lease, the placer role when it holds it
(agentd.cluster._placer), and reconciling its own share of the placement (docs/architecture.md).

Three loops, each on a short tick:
- lease: rewrite this host's capacity under its node key (TTL `lease_ttl_s`);
- placer: take or renew the placer lease; while held, compute and write the placement;
- reconcile: read the placement and start or stop this host's replicas to match. A host whose
  own lease could not be renewed for a whole TTL stops its replicas: the placer may already have
  started them elsewhere (fencing).

The failover bound: a dead host's key expires `lease_ttl_s` after its last renewal; the placer
sees it at its next ticks (`tick_s`; a host is lost after two listings without it) and writes
the new placement; the survivors see that at their next tick and start the replicas (a worker
takes about 2 s to be ready here). Messages the dead replicas held come back from the inbox
after `[inbox].ack_wait_s`.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup, TaskStatus
from nats.js import JetStreamContext

from agentd.bus import Subjects
from agentd.cluster._leases import NodeLease, PlacerLease
from agentd.cluster._placement import (
    AgentDemand,
    Assignment,
    NodeCapacity,
    Placement,
    decode_placement,
    encode_placement,
)
from agentd.cluster._placer import Placer
from agentd.cluster._store import DESIRED_KEY, PLACEMENT_KEY, ClusterStore
from agentd.config import Config
from agentd.errors import ControlError

__all__ = ["Cluster", "PlacedFleet"]

log = logging.getLogger("agentd.cluster")


class PlacedFleet(Protocol):
    """What the cluster needs of the local fleet (agentd.daemon's AgentFleet)."""

    def demands(self) -> dict[str, AgentDemand]:
        """Agents the cluster places, with their default desired count and bounds."""

    def local_replicas(self, name: str) -> set[str]: ...

    def all_replicas(self) -> set[str]:
        """Every replica this host runs, starting and draining ones included."""

    async def place(self, name: str, replicas: set[str]) -> tuple[list[str], list[str]]:
        """Run exactly `replicas` of `name` here; returns (started, stopped)."""


RecordFn = Callable[..., None]


@dataclass(frozen=True)
class _Devices:
    cores: int
    memory_bytes: int
    gpus: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class _Joined:
    """What `run()` opened: the buckets, this host's node lease and its placer side."""

    store: ClusterStore
    lease: NodeLease
    placer: Placer
    devices: _Devices


class Cluster:
    """This host in the cluster. `run()` joins; `leave()` steps out (clean shutdown)."""

    def __init__(
        self,
        js: JetStreamContext,
        subjects: Subjects,
        config: Config,
        fleet: PlacedFleet,
        record: RecordFn,
        *,
        pools: Sequence[str] = (),
        gpus: Callable[[], Sequence[dict[str, Any]]] | None = None,
    ) -> None:
        self._js = js
        self._subjects = subjects
        self._cfg = config.cluster
        self._replicas = config.stream_replicas
        self._fleet = fleet
        self._record = record
        self._pools = tuple(pools)
        self._gpus = gpus
        self.node = self._cfg.node
        # a new incarnation at every start: what the last one ran is not this one's to run
        self.incarnation = uuid.uuid4().hex[:12]
        self.started_at = time.time()
        self.tick_s = min(1.0, self._cfg.lease_ttl_s / 4)
        self._stopping = anyio.Event()
        self._left = False
        self._joined: _Joined | None = None
        self._busy: set[str] = set()  # agents being reconciled now
        self.placement: Placement = {}
        self.placement_revision = 0

    # lifecycle
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        ttl = self._cfg.lease_ttl_s
        store = await ClusterStore.open(
            self._js, self._subjects, ttl_s=ttl, replicas=self._replicas
        )
        lease = PlacerLease(store.placer, self.node, self.incarnation, ttl)
        self._joined = joined = _Joined(
            store,
            NodeLease(store.nodes, self.node, ttl),
            Placer(store, lease, self._fleet.demands, self._record),
            await anyio.to_thread.run_sync(self._read_devices),
        )
        await self._renew()
        log.info("joined the cluster as %s (incarnation %s)", self.node, self.incarnation)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._every, ttl / 3, self._renew)
            tg.start_soon(self._every, self.tick_s, joined.placer.tick)
            tg.start_soon(self._every, self.tick_s, self._reconcile, tg)
            task_status.started()
            await self._stopping.wait()
            tg.cancel_scope.cancel()

    async def leave(self) -> None:
        """Stop placing and reconciling and give up both leases, so the survivors take this
        host's agents now rather than after the TTL. The fleet drains its replicas next."""
        if self._left:
            return
        self._left = True
        self._stopping.set()
        if self._joined is not None:
            await self._joined.placer.lease.release()
            await self._joined.lease.release()

    @property
    def is_placer(self) -> bool:
        return self._joined is not None and self._joined.placer.lease.held

    def placed(self, name: str) -> int:
        """Replicas of `name` the last placement read places, on every host."""
        return len(self.placement.get(name, {}))

    def summary(self) -> dict[str, Any]:
        """This host's line in `agentctl status`."""
        return {
            "node": self.node,
            "incarnation": self.incarnation,
            "placer": self.is_placer,
            "lease_valid": self._joined.lease.valid if self._joined else False,
            "placement_revision": self.placement_revision,
        }

    # operator actions
    async def set_desired(self, name: str, count: int) -> int:
        """Ask for `count` replicas of `name` across the cluster; returns the count before."""
        store = self._store()
        for _ in range(10):  # compare-and-set against concurrent operators
            desired, revision = await store.read(DESIRED_KEY)
            before = int(desired.get(name, self._fleet.demands()[name].desired))
            if await store.write(DESIRED_KEY, {**desired, name: count}, revision):
                return before
        raise ControlError("conflict", f"the desired count of {name} kept changing; try again")

    async def view(self) -> dict[str, Any]:
        """Hosts, capacity, leases and placements, for `agentctl nodes`."""
        store = self._store()
        nodes = await store.live_nodes()
        placement_doc, revision = await store.read(PLACEMENT_KEY)
        desired, _ = await store.read(DESIRED_KEY)
        placement = decode_placement(placement_doc.get("agents", {}))
        holder = await self._joined.placer.lease.holder() if self._joined else None
        now = time.time()
        rows = []
        for name, cap in sorted(nodes.items()):
            here = Assignment(name, cap.incarnation)
            rows.append(
                {
                    **cap.to_dict(),
                    "lease_age_s": round(max(now - cap.renewed_at, 0.0), 2),
                    "placer": bool(holder and holder.get("node") == name),
                    "placed": sorted(
                        r
                        for replicas in placement.values()
                        for r, a in replicas.items()
                        if a == here
                    ),
                }
            )
        return {
            "node": self.node,
            "lease_ttl_s": self._cfg.lease_ttl_s,
            "placer": holder,
            "nodes": rows,
            "placement": encode_placement(placement),
            "placement_revision": revision,
            "placed_at": placement_doc.get("placed_at"),
            "desired": desired,
            "unplaced": placement_doc.get("unplaced", {}),
        }

    # loops
    async def _every(
        self, interval_s: float, step: Callable[..., Awaitable[None]], *a: Any
    ) -> None:
        while not self._stopping.is_set():
            try:
                await step(*a)
            except Exception:  # a loop must outlive a NATS hiccup
                log.exception("cluster %s step failed", getattr(step, "__name__", step))
            await anyio.sleep(interval_s)

    async def _renew(self) -> None:
        joined = self._joined
        if joined is None or self._left:
            return
        d = joined.devices
        capacity = NodeCapacity(
            node=self.node,
            incarnation=self.incarnation,
            cores=d.cores,
            memory_bytes=d.memory_bytes,
            slots=self._cfg.slots,
            gpus=d.gpus,
            labels=self._cfg.labels,
            pools=self._pools,
            replicas=tuple(sorted(self._fleet.all_replicas())),
            started_at=self.started_at,
            renewed_at=time.time(),
        )
        await joined.lease.renew(capacity.to_dict())

    async def _reconcile(self, tg: TaskGroup) -> None:
        joined = self._joined
        assert joined is not None
        doc, revision = await joined.store.read(PLACEMENT_KEY)
        self.placement = decode_placement(doc.get("agents", {}))
        self.placement_revision = revision
        fenced = not joined.lease.valid
        me = Assignment(self.node, self.incarnation)
        for name in self._fleet.demands():
            mine = (
                set() if fenced else {r for r, a in self.placement.get(name, {}).items() if a == me}
            )
            if name not in self._busy and mine != self._fleet.local_replicas(name):
                self._busy.add(name)
                tg.start_soon(self._apply, name, mine, revision, fenced)

    async def _apply(self, name: str, mine: set[str], revision: int, fenced: bool) -> None:
        try:
            started, stopped = await self._fleet.place(name, mine)
        finally:
            self._busy.discard(name)
        if started or stopped:
            self._record(
                "cluster.reconciled",
                agent=name,
                decision=f"started {len(started)}, stopped {len(stopped)}",
                reason=(
                    f"{self.node}'s node lease is not renewed: stopping its replicas"
                    if fenced
                    else f"placement revision {revision}"
                ),
                inputs={
                    "node": self.node,
                    "incarnation": self.incarnation,
                    "started": started,
                    "stopped": stopped,
                },
            )

    def _store(self) -> ClusterStore:
        if self._joined is None:
            raise ControlError("not_ready", "the cluster service has not joined yet")
        return self._joined.store

    def _read_devices(self) -> _Devices:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        gpus = tuple(self._gpus()) if self._gpus else ()
        return _Devices(cores=os.cpu_count() or 1, memory_bytes=int(pages), gpus=gpus)
