"""One host's part in a cluster: its node lease, the placer role when it holds it, and
reconciling its own share of the placement (DESIGN.md, "Beyond one host").

Three loops, each on a short tick:
- lease: rewrite this host's capacity under its node key (TTL `lease_ttl_s`);
- placer: take or renew the placer lease; while held, compute the placement from the live
  nodes, the agents' desired counts and the last placement, and write it (compare-and-set);
- reconcile: read the placement and start or stop this host's replicas to match. A host whose
  own lease could not be renewed for a whole TTL stops its replicas: the placer may already have
  started them elsewhere (fencing).

The failover bound: a dead host's key expires `lease_ttl_s` after its last renewal; the placer
sees it at its next tick (`tick_s`) and writes the new placement; the survivors see that at their
next tick and start the replicas (a worker takes about 2 s to be ready here). Messages the dead
replicas held come back from the inbox after `[inbox].ack_wait_s`.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from anyio.abc import TaskStatus
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyWrongLastSequenceError, NoKeysError, NotFoundError
from nats.js.kv import KeyValue

from agentd.bus import Subjects
from agentd.cluster._leases import NodeLease, PlacerLease
from agentd.cluster._placement import (
    AgentDemand,
    Assignment,
    NodeCapacity,
    Placement,
    decode_placement,
    encode_placement,
    place,
)
from agentd.config import Config
from agentd.errors import ControlError

__all__ = ["Cluster", "PlacedFleet"]

log = logging.getLogger("agentd.cluster")

PLACEMENT_KEY = "placement"
DESIRED_KEY = "desired"


class PlacedFleet(Protocol):
    """What the cluster needs of the local fleet (agentd.daemon's AgentFleet)."""

    def demands(self) -> dict[str, AgentDemand]:
        """Agents the cluster places, with their default desired count and bounds."""

    def local_replicas(self, name: str) -> set[str]: ...

    async def place(self, name: str, replicas: set[str]) -> tuple[list[str], list[str]]:
        """Run exactly `replicas` of `name` here; returns (started, stopped)."""

    def running(self) -> int: ...

    def all_replicas(self) -> set[str]:
        """Every replica this host runs, starting and draining ones included."""


RecordFn = Callable[..., None]


@dataclass
class _Devices:
    cores: int
    memory_bytes: int
    gpus: tuple[dict[str, Any], ...]


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
        self._nodes_kv: KeyValue | None = None
        self._placement_kv: KeyValue | None = None
        self._lease: NodeLease | None = None
        self._placer: PlacerLease | None = None
        self._devices: _Devices | None = None
        self._known_nodes: dict[str, str] = {}  # node -> incarnation, as the placer last saw
        # the previous listing of hosts: one listing during a NATS fail-over can be short
        self._last_listing: dict[str, NodeCapacity] = {}
        self._busy: set[str] = set()  # agents being reconciled now
        self.placement: Placement = {}
        self.placement_revision = 0

    # lifecycle
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        ttl = self._cfg.lease_ttl_s
        nodes = await self._bucket(self._subjects.nodes_bucket, "cluster members", ttl)
        placer = await self._bucket(self._subjects.placer_bucket, "the placer lease", ttl)
        self._placement_kv = await self._bucket(
            self._subjects.placement_bucket, "placement and desired counts", None
        )
        self._nodes_kv = nodes
        self._devices = await anyio.to_thread.run_sync(self._read_devices)
        self._lease = NodeLease(nodes, self.node, ttl)
        self._placer = PlacerLease(placer, self.node, self.incarnation, ttl)
        await self._renew()
        log.info("joined the cluster as %s (incarnation %s)", self.node, self.incarnation)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._every, ttl / 3, self._renew)
            tg.start_soon(self._every, self.tick_s, self._placer_tick)
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
        if self._placer is not None:
            await self._placer.release()
        if self._lease is not None:
            await self._lease.release()

    @property
    def is_placer(self) -> bool:
        return self._placer is not None and self._placer.held

    def placed(self, name: str) -> int:
        """Replicas of `name` the last placement read places, on every host."""
        return len(self.placement.get(name, {}))

    def summary(self) -> dict[str, Any]:
        """This host's line in `agentctl status`."""
        return {
            "node": self.node,
            "incarnation": self.incarnation,
            "placer": self.is_placer,
            "lease_valid": self._lease.valid if self._lease else False,
            "placement_revision": self.placement_revision,
        }

    # operator actions
    async def set_desired(self, name: str, count: int) -> int:
        """Ask for `count` replicas of `name` across the cluster; returns the count before."""
        kv = self._kv(self._placement_kv)
        for _ in range(10):  # compare-and-set against concurrent operators
            desired, revision = await self._read_json(kv, DESIRED_KEY)
            before = int(desired.get(name, self._fleet.demands()[name].desired))
            desired[name] = count
            try:
                if revision:
                    await kv.update(DESIRED_KEY, json.dumps(desired).encode(), last=revision)
                else:
                    await kv.create(DESIRED_KEY, json.dumps(desired).encode())
            except KeyWrongLastSequenceError:
                continue
            return before
        raise ControlError("conflict", f"the desired count of {name} kept changing; try again")

    async def view(self) -> dict[str, Any]:
        """Hosts, capacity, leases and placements, for `agentctl nodes`."""
        nodes = await self._live_nodes()
        placement_doc, revision = await self._read_json(self._kv(self._placement_kv), PLACEMENT_KEY)
        desired, _ = await self._read_json(self._kv(self._placement_kv), DESIRED_KEY)
        placement = decode_placement(placement_doc.get("agents", {}))
        holder = await self._placer.holder() if self._placer else None
        now = time.time()
        rows = []
        for name, cap in sorted(nodes.items()):
            placed = sorted(
                r
                for replicas in placement.values()
                for r, a in replicas.items()
                if a.node == name and a.incarnation == cap.incarnation
            )
            rows.append(
                {
                    **cap.to_dict(),
                    "lease_age_s": round(max(now - cap.renewed_at, 0.0), 2),
                    "placer": bool(holder and holder.get("node") == name),
                    "placed": placed,
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
        assert self._lease is not None and self._devices is not None
        if self._left:
            return
        d = self._devices
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
            running=self._fleet.running(),
            started_at=self.started_at,
            renewed_at=time.time(),
        )
        await self._lease.renew(capacity.to_dict())

    async def _placer_tick(self) -> None:
        assert self._placer is not None
        change = await self._placer.tick()
        if change == "acquired":
            log.info("%s holds the placer lease (revision %s)", self.node, self._placer.revision)
            self._known_nodes = {}
            self._record(
                "cluster.placer_acquired",
                decision="acquired",
                reason=f"{self.node} took the free placer lease",
                inputs={"node": self.node, "revision": self._placer.revision},
            )
        elif change == "lost":
            log.warning("%s lost the placer lease", self.node)
            self._record(
                "cluster.placer_lost",
                decision="lost",
                reason="the placer lease could not be renewed within its TTL",
                inputs={"node": self.node},
            )
        if self._placer.held:
            await self._place()

    async def _place(self) -> None:
        kv = self._kv(self._placement_kv)
        listed = await self._live_nodes()
        if self.node not in listed:
            # our own lease is renewed (we would not place otherwise): the listing is wrong, as
            # it can be while a NATS node fails over; placing from it would move everything
            log.warning("the node listing lacks %s itself; not placing this tick", self.node)
            return
        # a host is lost after two listings without it, not one: the last listing vouches for
        # it once more
        nodes = {**self._last_listing, **listed}
        self._last_listing = listed
        doc, revision = await self._read_json(kv, PLACEMENT_KEY)
        desired, _ = await self._read_json(kv, DESIRED_KEY)
        current = decode_placement(doc.get("agents", {}))
        if not self._known_nodes:  # a new placer: the hosts its predecessor placed on
            self._known_nodes = {
                a.node: a.incarnation for replicas in current.values() for a in replicas.values()
            }
        self._note_membership(nodes)
        demands = {}
        for name, demand in self._fleet.demands().items():
            count = int(desired.get(name, demand.desired))
            demands[name] = AgentDemand(
                name, min(max(count, 0), demand.max), demand.max, demand.pool
            )
        result = place(demands, nodes, current)
        if not result.changed and result.unplaced == doc.get("unplaced", {}) and revision:
            return
        body = {
            "placer": self.node,
            "placer_revision": self._placer.revision if self._placer else None,
            "placed_at": time.time(),
            "agents": encode_placement(result.placement),
            "unplaced": result.unplaced,
        }
        try:
            if revision:
                await kv.update(PLACEMENT_KEY, json.dumps(body).encode(), last=revision)
            else:
                await kv.create(PLACEMENT_KEY, json.dumps(body).encode())
        except KeyWrongLastSequenceError:
            return  # another placer wrote meanwhile: recompute next tick
        loads = {n: c.running for n, c in nodes.items()}
        for name in sorted(result.changed):
            moved = result.moved.get(name, [])
            replicas = result.placement.get(name, {})
            self._record(
                "cluster.placed",
                agent=name,
                # the decision is short (a record field of 64 characters); inputs say where
                decision=f"{len(replicas)} replicas on {len({a.node for a in replicas.values()})}"
                " hosts",
                reason=(
                    f"moved {', '.join(moved)} from lost hosts"
                    if moved
                    else f"{len(result.placement.get(name, {}))} of {demands[name].desired} wanted"
                    if name in demands
                    else "no longer placed"
                ),
                inputs={
                    "placement": {r: a.node for r, a in sorted(replicas.items())},
                    "nodes": sorted(nodes),
                    "running": loads,
                    "desired": demands[name].desired if name in demands else 0,
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

    async def _reconcile(self, tg: anyio.abc.TaskGroup) -> None:
        assert self._lease is not None
        doc, revision = await self._read_json(self._kv(self._placement_kv), PLACEMENT_KEY)
        self.placement = decode_placement(doc.get("agents", {}))
        self.placement_revision = revision
        fenced = not self._lease.valid
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

    # buckets
    async def _bucket(self, name: str, description: str, ttl_s: float | None) -> KeyValue:
        return await self._js.create_key_value(
            KeyValueConfig(
                bucket=name,
                description=f"agentd cluster: {description}",
                history=1,
                ttl=ttl_s,
                storage=StorageType.FILE,
                replicas=self._replicas,
            )
        )

    async def _live_nodes(self) -> dict[str, NodeCapacity]:
        kv = self._kv(self._nodes_kv)
        try:
            keys = await kv.keys()
        except NoKeysError:
            return {}
        nodes = {}
        for key in keys:
            try:
                entry = await kv.get(key)
            except NotFoundError:
                continue  # expired between the listing and the read
            try:
                nodes[key] = NodeCapacity.from_dict(json.loads(entry.value or b"{}"))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring node %s: unreadable capacity (%s)", key, exc)
        return nodes

    @staticmethod
    async def _read_json(kv: KeyValue, key: str) -> tuple[dict[str, Any], int]:
        try:
            entry = await kv.get(key)
        except NotFoundError:
            return {}, 0
        data: dict[str, Any] = json.loads(entry.value or b"{}")
        return data, entry.revision or 0

    @staticmethod
    def _kv(kv: KeyValue | None) -> KeyValue:
        if kv is None:
            raise ControlError("not_ready", "the cluster service has not joined yet")
        return kv

    def _read_devices(self) -> _Devices:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        gpus = tuple(self._gpus()) if self._gpus else ()
        return _Devices(cores=os.cpu_count() or 1, memory_bytes=int(pages), gpus=gpus)
