"""[models.<pool>]: vLLM model pools, how they are launched, sized, probed and scaled."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from agentd.config._section import _Section

__all__ = [
    "LauncherConfig",
    "ModelLivenessConfig",
    "ModelPoolConfig",
    "PoolAutoscaleConfig",
    "PoolName",
    "PoolReplicasConfig",
]


class LauncherConfig(_Section):
    """[models.<pool>.launcher]: the vLLM installation that serves a pool (never imported).

    `python` is that environment's interpreter: the server runs as ``python -m
    vllm.entrypoints.openai.api_server --model MODEL ...`` (the CPU build's ``vllm`` script does
    not start). `command` is an argv prefix instead, such as ``["vllm", "serve"]``, to which the
    model (positional) and the options are appended. Exactly one of the two. `env` goes over
    the replica's environment last.
    """

    python: Path | None = None
    command: list[str] | None = None
    env: dict[str, str] = {}

    @model_validator(mode="after")
    def _one_launcher(self) -> LauncherConfig:
        if (self.python is None) == (self.command is None):
            raise ValueError("set exactly one of python (a vLLM venv's interpreter) or command")
        if self.command is not None and not self.command:
            raise ValueError("command must name a program")
        return self


class PoolReplicasConfig(_Section):
    """[models.<pool>.replicas]: how many vLLM servers the pool runs (autoscaled in between)."""

    min: int = Field(1, ge=0, le=64)
    max: int = Field(1, ge=1, le=64)

    @model_validator(mode="after")
    def _ordered(self) -> PoolReplicasConfig:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class ModelLivenessConfig(_Section):
    """[models.<pool>.liveness]: GET /health plus a timed one-token completion, every interval.

    A hung engine still answers /health, so the completion is what catches it. `failures`
    probes in a row fail and the replica is killed and restarted.
    """

    interval_s: float = Field(5.0, gt=0)
    timeout_s: float = Field(10.0, gt=0)
    failures: int = Field(2, ge=1, le=100)


class PoolAutoscaleConfig(_Section):
    """[models.<pool>.autoscale]: scaling on the replicas' /metrics, with hysteresis.

    Averages over ready replicas. Scale up by one when waiting requests per replica reach
    `up_waiting` or KV cache use reaches `up_kv_cache`; scale down by one when waiting is at or
    below `down_waiting`, running at or below `down_running` and KV cache use at or below
    `down_kv_cache`. After any change the pool is left alone for `cooldown_s`.
    """

    enabled: bool = True
    interval_s: float = Field(5.0, gt=0)
    cooldown_s: float = Field(60.0, ge=0)
    up_waiting: float = Field(2.0, gt=0)
    down_waiting: float = Field(0.0, ge=0)
    up_kv_cache: float = Field(0.9, gt=0, le=1)
    down_kv_cache: float = Field(0.3, ge=0, le=1)
    down_running: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _hysteresis(self) -> PoolAutoscaleConfig:
        problems = []
        if self.down_waiting >= self.up_waiting:
            problems.append("down_waiting must be below up_waiting (hysteresis)")
        if self.down_kv_cache >= self.up_kv_cache:
            problems.append("down_kv_cache must be below up_kv_cache (hysteresis)")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class ModelPoolConfig(_Section):
    """[models.<pool>]: one model served by a pool of vLLM replicas that agentd places.

    `model` is a local directory (relative to agentd.toml when it exists there or starts with
    ``.``) or a hub id with an optional `revision`. On GPUs a replica takes
    `tensor_parallel_size` GPUs and `gpu_memory_utilization` of each; on the CPU it takes
    `cpu_cores_per_replica` cores and a KV cache of `kv_cache_bytes`. `device` ``auto`` means
    GPUs when the pool fits there, else the CPU.
    """

    model: str = Field(min_length=1)
    revision: str | None = None
    served_name: str | None = None
    launcher: LauncherConfig
    replicas: PoolReplicasConfig = PoolReplicasConfig()
    device: Literal["auto", "gpu", "cpu"] = "auto"
    tensor_parallel_size: int = Field(1, ge=1, le=64)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    share_gpus: bool = False
    cpu_cores_per_replica: int = Field(1, ge=1, le=1024)
    kv_cache_bytes: int = Field(2**30, ge=2**20)
    max_model_len: int = Field(2048, ge=16)
    max_num_seqs: int = Field(16, ge=1, le=4096)
    tool_call_parser: str | None = "hermes"
    extra_args: list[str] = []
    startup_timeout_s: float = Field(300.0, gt=0)
    stop_grace_s: float = Field(10.0, gt=0)
    max_restarts: int = Field(5, ge=0)
    liveness: ModelLivenessConfig = ModelLivenessConfig()
    autoscale: PoolAutoscaleConfig = PoolAutoscaleConfig()


PoolName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
