"""Supervision of OS processes: agent replicas, the embedded nats-server, vLLM servers.

The supervisor does not know what it supervises. Callers describe each child with a `ChildSpec`
(argv, restart policy, probes as async callables, log file) and follow it through `ChildInfo`
snapshots and `ChildEvent`s. See `Supervisor` for the lifecycle.
"""

from agentd.supervisor._intensity import backoff_delay
from agentd.supervisor._process import signal_group
from agentd.supervisor._spec import (
    ChildEvent,
    ChildEventKind,
    ChildInfo,
    ChildSpec,
    ChildState,
    LivenessProbe,
    Probe,
    RestartPolicy,
    RestartType,
)
from agentd.supervisor._supervisor import Supervisor

__all__ = [
    # The service
    "Supervisor",
    # What to supervise
    "ChildSpec",
    "LivenessProbe",
    "Probe",
    "RestartPolicy",
    "RestartType",
    "backoff_delay",
    # What it reports
    "ChildEvent",
    "ChildEventKind",
    "ChildInfo",
    "ChildState",
    # For the one place outside it that must kill a group at once (a forced exit, a timeout)
    "signal_group",
]
