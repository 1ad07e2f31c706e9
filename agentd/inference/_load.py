"""A replica's load as its vLLM server reports it on /metrics (Prometheus text format)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["ReplicaLoad", "parse_vllm_metrics"]

_RUNNING = "vllm:num_requests_running"
_WAITING = "vllm:num_requests_waiting"
_KV_CACHE = "vllm:kv_cache_usage_perc"


@dataclass(frozen=True, kw_only=True)
class ReplicaLoad:
    """Requests running and waiting in one server, and its KV cache use (0.0 to 1.0)."""

    running: float
    waiting: float
    kv_cache_usage: float

    def as_dict(self) -> dict[str, float]:
        """``{"running", "waiting", "kv_cache_pct"}`` for views and records."""
        return {
            "running": self.running,
            "waiting": self.waiting,
            "kv_cache_pct": round(100 * self.kv_cache_usage, 1),
        }


def parse_vllm_metrics(text: str) -> ReplicaLoad:
    """Read the three gauges the autoscaler needs from a vLLM server's /metrics text.

    A server with several engines (data parallel) reports one sample per engine label: running
    and waiting are summed, KV cache use is the highest of them. Raises ValueError when the
    text is not Prometheus exposition format or lacks a gauge (not a vLLM V1 server).
    """
    values: dict[str, list[float]] = {_RUNNING: [], _WAITING: [], _KV_CACHE: []}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in values:
                values[sample.name].append(float(sample.value))
    missing = [name for name, found in values.items() if not found]
    if missing:
        raise ValueError(f"/metrics lacks {', '.join(missing)}: not a vLLM V1 server?")
    return ReplicaLoad(
        running=sum(values[_RUNNING]),
        waiting=sum(values[_WAITING]),
        kv_cache_usage=max(values[_KV_CACHE]),
    )
