"""[cluster]: several agentd hosts on one NATS cluster (docs/architecture.md)."""

from __future__ import annotations

import os
import re
import socket

from pydantic import Field, field_validator

from agentd.config._section import _Section

__all__ = ["ClusterConfig"]

_NODE = re.compile(r"^[A-Za-z0-9_-]{1,63}$")


def _default_node() -> str:
    """$AGENTD_NODE (a DaemonSet sets it to the Kubernetes node), else the host's short name."""
    name = os.environ.get("AGENTD_NODE") or socket.gethostname().split(".")[0]
    # a key in a JetStream KV bucket: no dots, no spaces
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)[:63] or "node"


class ClusterConfig(_Section):
    """[cluster]: join the hosts on [bus].url as one fleet.

    Each host advertises its capacity under a node lease (a KV entry that lives `lease_ttl_s`
    unless renewed); one host holds the placer lease and writes where every agent replica runs;
    every host runs its share. A host whose lease lapses has its replicas placed elsewhere.
    """

    enabled: bool = False
    # this host's name in the cluster; empty: $AGENTD_NODE, else the host name
    node: str = Field("", validate_default=True)
    # free-form key/values advertised with the capacity (shown by `agentctl nodes`)
    labels: dict[str, str] = {}
    # the node lease and the placer lease: how long a silent host keeps its agents
    lease_ttl_s: float = Field(6.0, ge=1.0, le=300.0)
    # JetStream replicas of agentd's streams and KV buckets (3 on a three-node NATS cluster)
    stream_replicas: int = Field(3, ge=1, le=5)
    # agent replicas this host runs at most; 0: four per CPU core
    agent_slots: int = Field(0, ge=0)

    @field_validator("node")
    @classmethod
    def _node_name(cls, node: str) -> str:
        node = node or _default_node()
        if not _NODE.match(node):
            raise ValueError(
                f"{node!r} is not a node name (1-63 letters, digits, '_' or '-'; no dots)"
            )
        return node

    @property
    def slots(self) -> int:
        return self.agent_slots or 4 * (os.cpu_count() or 1)
