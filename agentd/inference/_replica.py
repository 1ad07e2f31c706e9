"""One replica of a model pool: a vLLM server, its probes and what an operator sees of it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx

from agentd.config import ModelPoolConfig
from agentd.errors import InferenceUnavailable
from agentd.inference._load import ReplicaLoad
from agentd.inference._placement import ReplicaPlacement, format_cores
from agentd.inference._replica_command import replica_command
from agentd.inference._server_http import check_serving, wait_serving
from agentd.supervisor import ChildInfo, ChildSpec, ChildState, RestartPolicy, RestartType

__all__ = ["LIVENESS_TICK_S", "PoolReplica", "ReplicaEndpoint"]

log = logging.getLogger("agentd.inference")

LIVENESS_TICK_S = 0.2
"""How often the supervisor asks `PoolReplica.alive`; a real probe runs only when one is due,
or at once after `request_probe`, so a gateway's report is acted on within this."""

HealthCallback = Callable[["PoolReplica", bool, str], None]


@dataclass(frozen=True)
class ReplicaEndpoint:
    """A READY replica as the LLM gateway sees it: where to send requests for `pool`."""

    pool: str
    replica: str
    base_url: str
    served_name: str
    model: str
    revision: str | None = None


class PoolReplica:
    """One vLLM server of a pool across its restarts (the supervisor restarts it in place).

    Liveness: every `liveness.interval_s` (or at once after `request_probe`), GET /health and
    a one-token completion within `liveness.timeout_s`; `liveness.failures` failed probes in a
    row and the supervisor kills and restarts the server. `healthy` is the last probe's answer.
    """

    def __init__(
        self,
        pool_name: str,
        pool: ModelPoolConfig,
        placement: ReplicaPlacement,
        *,
        host: str,
        port: int,
        client: httpx.AsyncClient,
        on_health: HealthCallback,
    ) -> None:
        self.pool_name = pool_name
        self.pool = pool
        self.placement = placement
        self.name = placement.name
        self.served_name = pool.served_name or pool_name
        self.host = host
        self.port = port
        self.base_url = f"http://{host}:{port}"
        self.healthy = False
        self.suspect: str | None = None
        self.load: ReplicaLoad | None = None
        self.error: str | None = None
        self.ready_at: float | None = None
        self._client = client
        self._on_health = on_health
        self._failures = 0
        self._last_probe = 0.0
        self._probe_now = False

    def endpoint(self) -> ReplicaEndpoint:
        """This replica as the gateway addresses it."""
        return ReplicaEndpoint(
            pool=self.pool_name,
            replica=self.name,
            base_url=self.base_url,
            served_name=self.served_name,
            model=self.pool.model,
            revision=self.pool.revision,
        )

    def child_spec(self, state_dir: Path, base_env: Mapping[str, str]) -> ChildSpec:
        """How the supervisor runs this server; its log goes to <state>/logs/models/."""
        argv, env = replica_command(
            self.pool,
            self.placement,
            served_name=self.served_name,
            host=self.host,
            port=self.port,
            cache_dir=state_dir / "models" / "cache" / self.name,
            base_env=base_env,
        )
        liveness = self.pool.liveness
        return ChildSpec(
            name=self.name,
            argv=argv,
            env=env,
            restart=RestartPolicy(
                type=RestartType.PERMANENT,
                max_restarts=self.pool.max_restarts,
                window_s=600.0,
                backoff_initial_s=1.0,
                backoff_max_s=60.0,
            ),
            stop_grace_s=self.pool.stop_grace_s,
            ready=self._ready,
            ready_timeout_s=self.pool.startup_timeout_s,
            liveness=self.alive,
            liveness_interval_s=LIVENESS_TICK_S,
            # The probe bounds itself; this only catches a probe that hangs past its own limit.
            liveness_timeout_s=liveness.timeout_s + 5.0,
            liveness_failures=1,
            log_path=state_dir / "logs" / "models" / f"{self.name}.log",
        )

    def request_probe(self, reason: str) -> None:
        """Probe at the next tick; keep the replica out of `endpoints` until the probe answers."""
        self.suspect = reason
        self._probe_now = True

    def serving(self, info: ChildInfo | None) -> bool:
        """Ready, last probe passed, no failure reported since."""
        return (
            info is not None
            and info.state is ChildState.RUNNING
            and self.healthy
            and self.suspect is None
        )

    def mark_started(self) -> None:
        """The supervisor saw the ready probe pass: the server serves."""
        self._failures = 0
        self._last_probe = anyio.current_time()
        self.suspect = None
        self.error = None
        self.ready_at = time.time()
        self.healthy = True

    def mark_down(self) -> None:
        """The process ended (it will be restarted, or it was stopped)."""
        self.healthy = False
        self.load = None
        self.ready_at = None

    async def _ready(self, info: ChildInfo) -> None:
        # Each attempt gets the liveness timeout; the supervisor bounds the whole wait with
        # startup_timeout_s.
        await wait_serving(
            self._client,
            self.base_url,
            self.served_name,
            attempt_timeout_s=self.pool.liveness.timeout_s,
        )

    async def alive(self, info: ChildInfo) -> bool:
        """The supervisor's liveness probe, asked every tick; probes the server when due.

        Raises InferenceUnavailable once `liveness.failures` probes in a row failed.
        """
        liveness = self.pool.liveness
        now = anyio.current_time()
        if not self._probe_now and now - self._last_probe < liveness.interval_s:
            return True
        self._probe_now = False
        problem = await check_serving(
            self._client, self.base_url, self.served_name, timeout_s=liveness.timeout_s
        )
        self._last_probe = anyio.current_time()
        was_healthy = self.healthy
        self.suspect = None
        if problem is None:
            self._failures = 0
            self.healthy = True
            if not was_healthy:
                self._on_health(self, True, "probe passed")
            return True
        self._failures += 1
        self.healthy = False
        self.error = problem
        log.warning(
            "model replica %s probe %d/%d failed: %s",
            self.name,
            self._failures,
            liveness.failures,
            problem,
        )
        if was_healthy:
            self._on_health(self, False, problem)
        if self._failures >= liveness.failures:
            # Raised rather than False, so that the supervisor's reason for the kill says why.
            raise InferenceUnavailable(f"{self._failures} probes failed in a row, last: {problem}")
        return True

    def describe(self, info: ChildInfo | None, now: float) -> dict[str, Any]:
        """One row of `agentctl models`."""
        state = _state_of(self, info)
        row: dict[str, Any] = {
            "name": self.name,
            "state": state,
            "pid": info.pid if info else None,
            "base_url": self.base_url,
            "placement": _describe_placement(self.placement),
            "restarts": info.restarts if info else 0,
            "load": self.load.as_dict() if self.load and state == "ready" else None,
            "error": self.error or (info.last_error if info else None),
            "uptime_s": round(now - self.ready_at, 1) if self.ready_at else None,
            "loading": None,
        }
        if info is not None and info.state is ChildState.STARTING:
            row["loading"] = {
                "elapsed_s": round(now - info.started_at, 1) if info.started_at else 0.0,
                "timeout_s": self.pool.startup_timeout_s,
                "last_line": info.last_line,
            }
        return row


def _state_of(replica: PoolReplica, info: ChildInfo | None) -> str:
    if info is None:
        return "failed" if replica.error else "pending"
    if info.state is ChildState.RUNNING:
        return "ready" if replica.healthy and replica.suspect is None else "unhealthy"
    return {
        ChildState.STARTING: "loading",
        ChildState.BACKOFF: "restarting",
        ChildState.STOPPING: "stopping",
        ChildState.STOPPED: "stopped",
        ChildState.EXITED: "failed",
        ChildState.FAILED: "failed",
    }[info.state]


def _describe_placement(placement: ReplicaPlacement) -> dict[str, Any]:
    if placement.device == "gpu":
        return {
            "device": "gpu",
            "gpus": list(placement.gpu_indices),
            "gpu_memory_utilization": placement.gpu_memory_utilization,
        }
    return {
        "device": "cpu",
        "cores": format_cores(placement.cpu_cores),
        "kv_cache_bytes": placement.kv_cache_bytes,
    }
