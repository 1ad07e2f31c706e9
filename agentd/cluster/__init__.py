"""Several hosts as one fleet over a NATS cluster: node leases with each host's capacity, one
placer (a lease) that writes where every agent replica runs, and each host reconciling its share.

See docs in deploy/k8s/README.md and the README's "Several hosts" section.
"""

from agentd.cluster._cluster import Cluster, PlacedFleet
from agentd.cluster._placement import (
    AgentDemand,
    Assignment,
    NodeCapacity,
    Placement,
    PlaceResult,
    place,
)

__all__ = [
    "AgentDemand",
    "Assignment",
    "Cluster",
    "NodeCapacity",
    "PlaceResult",
    "PlacedFleet",
    "Placement",
    "place",
]
