"""agentd's own Prometheus metrics: the registry, what feeds it, and the HTTP endpoint.

The recorder passes every committed decision record to `AgentdMetrics.observe` (decisions by
kind, tool calls by effect, LLM calls and tokens by agent and pool, restarts, messages); the
`MetricsService` samples the fleet (replicas by state, backlog, decisions per second), follows
the run ledger (runs and their latency) and serves `/metrics`.
"""

from ._registry import RUN_SECONDS_BUCKETS, AgentdMetrics
from ._service import MetricsService

__all__ = ["RUN_SECONDS_BUCKETS", "AgentdMetrics", "MetricsService"]
