"""agentd's own Prometheus metrics: the registry, what feeds it, and the HTTP endpoint.

Every record the decision log stores, the daemon's own and those replicas publish, reaches
`AgentdMetrics.observe` once after it committed (decisions by kind, runs by outcome and their
duration, tool calls by effect and duration, approvals' wait, LLM calls, tokens, request
duration and time to first token by pool, denials by rule, restarts, messages); the
`MetricsService` samples the fleet (replicas by state, backlog) and serves `/metrics`. Label
values are bounded (`BoundedLabels`). See docs/audit.md, "Metrics".
"""

from ._labels import BoundedLabels
from ._registry import RUN_SECONDS_BUCKETS, AgentdMetrics, sandbox_rule
from ._service import MetricsService

__all__ = [
    "RUN_SECONDS_BUCKETS",
    "AgentdMetrics",
    "BoundedLabels",
    "MetricsService",
    "sandbox_rule",
]
