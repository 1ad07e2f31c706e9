"""The autoscaling rule (hysteresis, cooldown, bounds) and reading vLLM's /metrics text."""

from __future__ import annotations

import pytest

from agentd.config import PoolAutoscaleConfig
from agentd.inference import ReplicaLoad, decide_scale, parse_vllm_metrics

# As vLLM V1 writes it (abridged): gauges per engine, counters, histograms, process metrics.
METRICS = """\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 9182.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 4.0
vllm:num_requests_running{engine="1",model_name="tiny"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="tiny"} 60.0
vllm:num_requests_waiting{engine="1",model_name="tiny"} 2.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="tiny"} 0.5
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="tiny"} 1234.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="tiny"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="tiny"} 10.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="tiny"} 10.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="tiny"} 0.31
"""


def test_vllm_metrics_are_summed_across_engines() -> None:
    load = parse_vllm_metrics(METRICS)
    assert load == ReplicaLoad(running=7.0, waiting=62.0, kv_cache_usage=0.5)
    assert load.as_dict() == {"running": 7.0, "waiting": 62.0, "kv_cache_pct": 50.0}


def test_metrics_without_the_gauges_are_refused() -> None:
    with pytest.raises(ValueError, match="lacks vllm:kv_cache_usage_perc"):
        parse_vllm_metrics(METRICS.replace("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage"))


RULE = PoolAutoscaleConfig(up_waiting=2.0, down_waiting=0.0, cooldown_s=30.0)


def load(waiting: float = 0.0, running: float = 0.0, kv: float = 0.0) -> ReplicaLoad:
    return ReplicaLoad(running=running, waiting=waiting, kv_cache_usage=kv)


def decide(loads: list[ReplicaLoad], replicas: int, since: float | None = None) -> str:
    decision = decide_scale(
        loads,
        replicas=replicas,
        min_replicas=1,
        max_replicas=3,
        rule=RULE,
        since_last_change_s=since,
    )
    assert decision.after - decision.before == {"up": 1, "down": -1, "hold": 0}[decision.direction]
    return decision.direction


@pytest.mark.parametrize(
    ("loads", "replicas", "since", "expected"),
    [
        ([load(waiting=4)], 1, None, "up"),  # 4 waiting >= 2 per replica
        ([load(waiting=3), load(waiting=0)], 2, None, "hold"),  # 1.5 per replica
        ([load(kv=0.95)], 1, None, "up"),  # KV cache nearly full
        ([load(waiting=9)] * 3, 3, None, "hold"),  # at max
        ([load(waiting=9)], 1, 10.0, "hold"),  # cooling down
        ([load(waiting=9)], 1, 31.0, "up"),  # cooldown over
        ([load(), load()], 2, None, "down"),  # idle
        ([load(running=1), load()], 2, None, "down"),  # 0.5 running: at or below 1
        ([load(running=3), load(running=3)], 2, None, "hold"),  # busy, no queue: between
        ([load(kv=0.5), load()], 2, None, "hold"),  # KV cache above down_kv_cache
        ([load()], 1, None, "hold"),  # at min
        ([load()], 2, None, "hold"),  # one replica still loading: not all report
        ([], 0, 5.0, "up"),  # below min, even in cooldown
        ([], 1, None, "hold"),  # nothing reports
    ],
)
def test_scaling_steps_with_hysteresis_cooldown_and_bounds(
    loads: list[ReplicaLoad], replicas: int, since: float | None, expected: str
) -> None:
    assert decide(loads, replicas, since) == expected


def test_a_decision_carries_its_inputs() -> None:
    decision = decide_scale(
        [load(waiting=5, running=4, kv=0.4), load(waiting=1, running=4, kv=0.6)],
        replicas=2,
        min_replicas=1,
        max_replicas=4,
        rule=RULE,
        since_last_change_s=45.2,
    )
    assert (decision.direction, decision.before, decision.after) == ("up", 2, 3)
    assert decision.reason == "3.0 waiting per replica >= 2"
    assert decision.inputs == {
        "replicas": 2,
        "reporting": 2,
        "waiting_per_replica": 3.0,
        "running_per_replica": 4.0,
        "kv_cache_max": 0.6,
        "min": 1,
        "max": 4,
        "since_last_change_s": 45,
    }
