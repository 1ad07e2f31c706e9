"""Where each agent replica runs: a pure function of demand, live hosts and the last placement.

The placer calls `place()` on every tick. It is stable: a replica stays where it is while its host
lives (same host *and* same incarnation: a host that restarted is a new incarnation and runs
nothing until placed again). Replicas of lost hosts keep their names and move to the live host
with the fewest replicas of that agent, then the fewest in all, within each host's slots; an
agent that needs a model pool prefers hosts that serve it.

A name is only given to a host when no other live host still runs it (each host advertises what
it runs), so a replica never runs twice, not even while one drains. When an agent's replicas are
uneven by two or more (a host joined, or came back after a failover), one replica a tick moves:
the fuller host's highest replica is dropped (it drains) and a fresh name starts on the emptier
one; that needs a free name, so an agent already at `max` replicas is not rebalanced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AgentDemand", "Assignment", "NodeCapacity", "PlaceResult", "Placement", "place"]


@dataclass(frozen=True)
class NodeCapacity:
    """What one host advertises under its node lease."""

    node: str
    incarnation: str  # new at every daemon start
    cores: int
    memory_bytes: int
    slots: int  # agent replicas it runs at most
    gpus: tuple[dict[str, Any], ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    pools: tuple[str, ...] = ()  # model pools it serves
    replicas: tuple[str, ...] = ()  # agent replicas it runs now (starting and draining too)
    started_at: float = 0.0
    renewed_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "incarnation": self.incarnation,
            "cores": self.cores,
            "memory_bytes": self.memory_bytes,
            "slots": self.slots,
            "gpus": list(self.gpus),
            "labels": dict(self.labels),
            "pools": list(self.pools),
            "replicas": list(self.replicas),
            "started_at": self.started_at,
            "renewed_at": self.renewed_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeCapacity:
        return cls(
            node=str(data["node"]),
            incarnation=str(data["incarnation"]),
            cores=int(data.get("cores", 1)),
            memory_bytes=int(data.get("memory_bytes", 0)),
            slots=int(data.get("slots", 1)),
            gpus=tuple(data.get("gpus", ())),
            labels=dict(data.get("labels", {})),
            pools=tuple(data.get("pools", ())),
            replicas=tuple(data.get("replicas", ())),
            started_at=float(data.get("started_at", 0.0)),
            renewed_at=float(data.get("renewed_at", 0.0)),
        )


@dataclass(frozen=True)
class Assignment:
    """A replica's host: the node name and the incarnation it was placed on."""

    node: str
    incarnation: str


@dataclass(frozen=True)
class AgentDemand:
    """How many replicas of an agent should run, and what they need."""

    name: str
    desired: int
    max: int
    pool: str | None = None


# agent -> replica name -> host
Placement = dict[str, dict[str, Assignment]]


@dataclass
class PlaceResult:
    placement: Placement
    unplaced: dict[str, int]  # agent -> replicas no host had room for
    moved: dict[str, list[str]]  # agent -> replicas taken from lost hosts
    changed: set[str]  # agents whose placement differs from the last one


def place(
    demands: Mapping[str, AgentDemand],
    nodes: Mapping[str, NodeCapacity],
    current: Mapping[str, Mapping[str, Assignment]],
) -> PlaceResult:
    """The next placement. `nodes` are the live hosts; `current` the last placement written."""

    def alive(a: Assignment) -> bool:
        host = nodes.get(a.node)
        return host is not None and host.incarnation == a.incarnation

    placement: Placement = {}
    load = dict.fromkeys(nodes, 0)
    running_on = {r: n.node for n in nodes.values() for r in n.replicas}
    # first what stays, so every host's load is known before anything moves
    for name, demand in sorted(demands.items()):
        before = current.get(name, {})
        kept = {r: a for r, a in before.items() if alive(a)}
        for replica in sorted(kept, key=_index)[demand.desired :]:
            del kept[replica]  # scaled down: the highest indices go
        placement[name] = kept
        for a in kept.values():
            load[a.node] += 1
    unplaced: dict[str, int] = {}
    moved: dict[str, list[str]] = {}
    for name, demand in sorted(demands.items()):
        kept = placement[name]
        lost = {r for r, a in current.get(name, {}).items() if not alive(a)}
        for _ in range(max(demand.desired - len(kept), 0)):
            host = _choose(demand, nodes, load, kept)
            fresh = None if host is None else _free_name(demand, kept, running_on, host.node, lost)
            if host is None or fresh is None:
                unplaced[name] = unplaced.get(name, 0) + 1
                continue
            kept[fresh] = Assignment(host.node, host.incarnation)
            load[host.node] += 1
            if fresh in lost:
                moved.setdefault(name, []).append(fresh)
        if name not in unplaced:
            _rebalance(demand, nodes, load, kept, running_on)
    changed = {
        name
        for name in set(placement) | set(current)
        if placement.get(name, {}) != dict(current.get(name, {}))
    }
    return PlaceResult(placement, unplaced, moved, changed)


def _choose(
    demand: AgentDemand,
    nodes: Mapping[str, NodeCapacity],
    load: Mapping[str, int],
    siblings: Mapping[str, Assignment],
) -> NodeCapacity | None:
    roomy = [n for n in nodes.values() if load[n.node] < n.slots]
    if demand.pool is not None:
        serving = [n for n in roomy if demand.pool in n.pools]
        roomy = serving or roomy  # no host serves the pool: run it anyway, its calls fail clearly
    if not roomy:
        return None
    same_agent: dict[str, int] = {}
    for a in siblings.values():
        same_agent[a.node] = same_agent.get(a.node, 0) + 1
    return min(roomy, key=lambda n: (same_agent.get(n.node, 0), load[n.node], n.node))


def _free_name(
    demand: AgentDemand,
    kept: Mapping[str, Assignment],
    running_on: Mapping[str, str],
    host: str,
    lost: set[str],
) -> str | None:
    """A lost replica's name first (it moves), else the lowest name neither placed nor running
    on another live host."""
    names = sorted(lost, key=_index) + [f"{demand.name}-{i}" for i in range(demand.max)]
    for replica in names:
        if replica not in kept and running_on.get(replica, host) == host:
            return replica
    return None


def _rebalance(
    demand: AgentDemand,
    nodes: Mapping[str, NodeCapacity],
    load: dict[str, int],
    kept: dict[str, Assignment],
    running_on: Mapping[str, str],
) -> None:
    counts = dict.fromkeys(nodes, 0)
    for a in kept.values():
        counts[a.node] += 1
    receiver = _choose(demand, nodes, load, kept)
    if receiver is None or not counts:
        return
    donor = max(counts, key=lambda n: (counts[n], n))
    if counts[donor] - counts[receiver.node] < 2:
        return
    fresh = next(
        (
            f"{demand.name}-{i}"
            for i in range(demand.max)
            if f"{demand.name}-{i}" not in kept and f"{demand.name}-{i}" not in running_on
        ),
        None,
    )
    if fresh is None:
        return
    leaving = max((r for r, a in kept.items() if a.node == donor), key=_index)
    del kept[leaving]
    load[donor] -= 1
    kept[fresh] = Assignment(receiver.node, receiver.incarnation)
    load[receiver.node] += 1


def _index(replica: str) -> int:
    tail = replica.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def encode_placement(placement: Placement) -> dict[str, dict[str, list[str]]]:
    return {
        name: {r: [a.node, a.incarnation] for r, a in sorted(replicas.items())}
        for name, replicas in sorted(placement.items())
    }


def decode_placement(data: Mapping[str, Any]) -> Placement:
    return {
        str(name): {str(r): Assignment(str(a[0]), str(a[1])) for r, a in replicas.items()}
        for name, replicas in data.items()
    }
