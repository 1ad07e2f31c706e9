"""One model pool's state, and the decision records its replicas' lifecycle events become."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from agentd.config import ModelPoolConfig
from agentd.inference._devices import GpuInfo
from agentd.inference._placement import (
    PlacementError,
    PoolRequest,
    ReplicaPlacement,
    place_pool,
)
from agentd.inference._replica import PoolReplica
from agentd.supervisor import ChildEvent, ChildEventKind, ChildInfo

__all__ = ["Pool", "free_port", "missing_files", "record_child_event"]


class Pool:
    """One pool: its config, its replicas (in index order) and its last scaling step."""

    def __init__(self, name: str, config: ModelPoolConfig) -> None:
        self.name = name
        self.config = config
        self.replicas: dict[str, PoolReplica] = {}
        self.lock = anyio.Lock()
        self.last_change: float | None = None
        self.last_decision: dict[str, Any] | None = None

    def request(self, replicas: int) -> PoolRequest:
        """What `replicas` replicas of this pool ask of placement."""
        cfg = self.config
        return PoolRequest(
            name=self.name,
            replicas=replicas,
            device=cfg.device,
            tensor_parallel_size=cfg.tensor_parallel_size,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            share_gpus=cfg.share_gpus,
            cpu_cores_per_replica=cfg.cpu_cores_per_replica,
            kv_cache_bytes=cfg.kv_cache_bytes,
        )

    def place(
        self,
        count: int,
        gpus: Sequence[GpuInfo],
        cores: Sequence[int],
        taken: Sequence[ReplicaPlacement],
    ) -> list[ReplicaPlacement]:
        """Placements for `count` replicas, the running ones where they are.

        Raises PlacementError if they do not fit, or if they would only fit by moving running
        replicas (``auto`` switching devices): that is a redeploy, not a scale.
        """
        placements = place_pool(self.request(count), gpus, cores, taken)
        for current, fresh in zip(self.replicas.values(), placements, strict=False):
            if current.placement != fresh:
                raise PlacementError(
                    self.name,
                    f"{count} replicas where its {len(self.replicas)} run now",
                    f"not without moving replica {current.name}",
                )
        return placements

    def describe(self, info_of: Callable[[str], ChildInfo | None], now: float) -> dict[str, Any]:
        """This pool as a row of `agentctl models`, its replicas as members."""
        cfg = self.config
        return {
            "pool": self.name,
            "model": cfg.model,
            "revision": cfg.revision,
            "served_name": cfg.served_name or self.name,
            "device": cfg.device,
            "replicas": {"min": cfg.replicas.min, "max": cfg.replicas.max},
            "desired": len(self.replicas),
            "autoscale": cfg.autoscale.enabled,
            "last_decision": self.last_decision,
            "members": [r.describe(info_of(r.name), now) for r in self.replicas.values()],
        }


def record_child_event(
    record: Callable[..., None],
    pool: Pool,
    replica: PoolReplica,
    event: ChildEvent,
    info: ChildInfo | None,
) -> None:
    """Update `replica` for a supervisor event and record it (model.started / stopped /
    health_changed); spawns and restarts are in the log file and the events, not records."""
    common: dict[str, Any] = {
        "replica": event.name,
        "pool": pool.name,
        "pid": event.pid,
        "restarts": event.restarts,
        "lineage": {"model_id": pool.config.model, "model_revision": pool.config.revision},
    }
    if event.kind is ChildEventKind.READY:
        replica.mark_started()
        startup_s = event.at - info.started_at if info and info.started_at else None
        record(
            "model.started",
            decision="ready",
            reason=f"serving at {replica.base_url}",
            startup_s=None if startup_s is None else round(startup_s, 2),
            placement=replica.describe(info, time.time())["placement"],
            **common,
        )
    elif event.kind in (ChildEventKind.EXIT, ChildEventKind.STOP):
        replica.mark_down()
        if event.kind is ChildEventKind.EXIT:
            replica.error = event.reason
        record(
            "model.stopped",
            decision=str(event.kind),
            reason=event.reason,
            exit_code=event.exit_code,
            signal=event.signal,
            **common,
        )
    elif event.kind is ChildEventKind.UNHEALTHY:
        record("model.health_changed", decision="killed", reason=event.reason, **common)
    elif event.kind is ChildEventKind.FAILED:
        replica.error = event.reason
        record("model.health_changed", decision="failed", reason=event.reason, **common)


def free_port(host: str) -> int:
    """A port free now on `host`. The server binds it a moment later; should another process
    take it first, the replica fails to start and the supervisor retries it."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def missing_files(pools: Mapping[str, ModelPoolConfig]) -> list[str]:
    """What the pools need on this host and do not find: a local model directory, the
    launcher's interpreter. One line per problem, naming the TOML path (empty: all there)."""
    problems = []
    for name, config in pools.items():
        model = Path(config.model)
        if model.is_absolute() and not model.is_dir():
            hint = " (build the tiny offline model with `agentd models build-tiny DIR`)"
            problems.append(f"models.{name}.model: no model directory at {model}{hint}")
        python = config.launcher.python
        if python is not None and not python.exists():
            problems.append(
                f"models.{name}.launcher.python: no interpreter at {python} "
                "(install vLLM there, e.g. deploy/vllm-cpu/setup.sh DIR)"
            )
    return problems
