"""Model pools: every configured model's vLLM replicas, placed, supervised, probed and scaled.

The LLM gateway reads `ModelPools.endpoints(pool)` for each request and reports replicas that
failed it with `report_failure`; operators read `snapshot()` through `agentctl models`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx
from anyio.abc import TaskGroup, TaskStatus

from agentd.config import ModelPoolConfig
from agentd.errors import ControlError, WorkerCrashed
from agentd.inference._devices import GpuInfo, cpu_cores, discover_gpus
from agentd.inference._placement import PlacementError, ReplicaPlacement, place_pool
from agentd.inference._pool import Pool, free_port, record_child_event
from agentd.inference._replica import PoolReplica, ReplicaEndpoint
from agentd.inference._scaling import decide_scale
from agentd.inference._server_http import read_load
from agentd.supervisor import ChildEvent, ChildInfo, Supervisor, signal_group

__all__ = ["ModelPools", "RecordDecision"]

# how long the autoscaler waits for a replica's /metrics
METRICS_TIMEOUT_S = 5.0

log = logging.getLogger("agentd.inference")

RecordDecision = Callable[..., None]
"""``record(kind, **fields)``: the daemon's recorder (decision log); must not raise."""


class ModelPools:
    """Runs every `[models.<pool>]`: placement, replicas under a supervisor, liveness, scaling.

    `run()` places each pool's minimum replicas (raising PlacementError, which names the pool,
    what it needs and what is free, if one does not fit), reports started at once, then starts
    the replicas in the background: a vLLM server takes tens of seconds to load, and the
    daemon should not wait for it to accept work (`snapshot()` shows replicas loading).
    Replicas run under a supervisor of their own (orphans of a SIGKILLed daemon are reaped
    through <state>/models/children.json); their output goes to <state>/logs/models/.
    `gpus` and `cores` replace discovery (tests, or a host that reserves devices).
    """

    def __init__(
        self,
        pools: Mapping[str, ModelPoolConfig],
        *,
        state_dir: Path,
        record: RecordDecision | None = None,
        gpus: Sequence[GpuInfo] | None = None,
        cores: Sequence[int] | None = None,
        host: str = "127.0.0.1",
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self._pools = {name: Pool(name, cfg) for name, cfg in pools.items()}
        # Known from the config, not from ready replicas: a request naming a loading pool's
        # served name is a pool that cannot answer yet (503), not an unknown model (404).
        self._served = {name: cfg.served_name or name for name, cfg in pools.items()}
        self._state_dir = state_dir
        self._record = record or (lambda kind, **fields: None)
        self._gpus = gpus
        self._cores = cores
        self._host = host
        self._base_env = dict(os.environ if base_env is None else base_env)
        self._supervisor: Supervisor | None = None
        self._client: httpx.AsyncClient | None = None
        self._task_group: TaskGroup | None = None
        self._stop = anyio.Event()
        self._done = anyio.Event()
        self._started = False

    # the gateway's interface
    def pool_names(self) -> list[str]:
        """Every configured pool, sorted."""
        return sorted(self._pools)

    def pool_of(self, model: str) -> str | None:
        """The pool a request's `model` names, by pool name or served name; None if none does."""
        if model in self._pools:
            return model
        return next((p for p in sorted(self._served) if self._served[p] == model), None)

    def model_id(self, pool: str) -> str | None:
        """The model `pool` serves (its `[models.<pool>].model`); None for an unknown pool."""
        entry = self._pools.get(pool)
        return None if entry is None else entry.config.model

    def endpoints(self, pool: str) -> list[ReplicaEndpoint]:
        """The replicas of `pool` that serve now (ready, last probe passed); KeyError if none
        is configured under that name."""
        entry = self._pools[pool]
        return [r.endpoint() for r in entry.replicas.values() if r.serving(self._info(r.name))]

    def report_failure(self, replica: str, reason: str) -> None:
        """A caller saw `replica` fail (connect error, 5xx before the first byte): it leaves
        `endpoints` and is probed at once; it comes back if the probe passes."""
        for entry in self._pools.values():
            found = entry.replicas.get(replica)
            if found is not None:
                log.warning("model replica %s reported failing: %s", replica, reason)
                found.request_probe(reason)
                return
        log.debug("failure reported for unknown model replica %r", replica)

    def snapshot(self) -> list[dict[str, Any]]:
        """Every pool and its replicas, for `agentctl models`."""
        now = time.time()
        return [self._pools[name].describe(self._info, now) for name in self.pool_names()]

    def pids(self) -> list[int]:
        """Process-group leaders of every running replica (for a forced exit)."""
        if self._supervisor is None:
            return []
        return [info.pid for info in self._supervisor.children() if info.pid]

    # lifecycle
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Place the pools, report started, run replicas and autoscalers until `shutdown()`."""
        if self._started:
            raise RuntimeError("ModelPools.run() can only be called once")
        self._started = True
        try:
            self.check_placement()
            registry = self._state_dir / "models" / "children.json"
            async with (
                # trust_env off: a proxy from the environment must not sit between agentd and
                # its own loopback servers.
                httpx.AsyncClient(trust_env=False) as client,
                Supervisor(on_event=self._on_child_event, registry_path=registry) as supervisor,
                anyio.create_task_group() as tg,
            ):
                self._client, self._supervisor, self._task_group = client, supervisor, tg
                for entry in self._pools.values():
                    # Only places them and starts their servers in the background.
                    await self.scale(entry.name, entry.config.replicas.min, reason="startup")
                    tg.start_soon(self._autoscale_pool, entry)
                task_status.started()
                await self._stop.wait()
                with anyio.CancelScope(shield=True):
                    await self._stop_all(supervisor)
                tg.cancel_scope.cancel()
        finally:
            self._task_group = None
            self._done.set()

    async def shutdown(self) -> None:
        """Stop every replica (SIGTERM, grace, SIGKILL) and end `run()`. Repeatable; safe
        before `run()`."""
        self._stop.set()
        if self._started:
            await self._done.wait()

    def force_kill(self) -> None:
        """SIGKILL every replica's process group now (the daemon's forced exit)."""
        for pid in self.pids():
            signal_group(pid, signal.SIGKILL)

    # scaling
    async def scale(self, pool: str, count: int, *, reason: str, **inputs: Any) -> int:
        """Run `count` replicas of `pool` (within its min and max); returns the previous count.

        New replicas start in the background. Raises ControlError for an unknown pool or a
        count out of bounds, PlacementError when the devices for more replicas are not free.
        """
        entry = self._pools.get(pool)
        if entry is None:
            raise ControlError("unknown_pool", f"no model pool {pool!r}", pools=self.pool_names())
        bounds = entry.config.replicas
        if not bounds.min <= count <= bounds.max:
            raise ControlError(
                "out_of_bounds",
                f"pool {pool} runs {bounds.min} to {bounds.max} replicas; got {count}",
            )
        async with entry.lock:
            before = len(entry.replicas)
            if count > before:
                placements = self._place(entry, count)
                for placement in placements[before:]:
                    self._add_replica(entry, placement)
            elif count < before:
                for name in list(entry.replicas)[count:]:
                    await self._remove_replica(entry, name)
            if count != before:
                entry.last_change = anyio.current_time()
                change = f"{before}->{count}"
                entry.last_decision = {"at": time.time(), "change": change, "reason": reason}
                self._record(
                    "model.scaled",
                    replica=None,
                    decision=f"{before}->{count}",
                    reason=reason,
                    inputs=inputs or None,
                    pool=pool,
                    lineage={"model_id": entry.config.model},
                )
        return before

    def check_placement(self) -> None:
        """Raise PlacementError if some pool's minimum does not fit on this host's devices.

        `run()` checks this first; call it earlier to fail before anything else starts.
        """
        if not self._pools:
            return
        taken: list[ReplicaPlacement] = []
        for entry in self._pools.values():
            taken += place_pool(entry.request(entry.config.replicas.min), *self._devices(), taken)

    def _devices(self) -> tuple[Sequence[GpuInfo], Sequence[int]]:
        if self._gpus is None:
            self._gpus = discover_gpus(visible=os.environ.get("CUDA_VISIBLE_DEVICES"))
        if self._cores is None:
            self._cores = cpu_cores()
        return self._gpus, self._cores

    def _place(self, entry: Pool, count: int) -> list[ReplicaPlacement]:
        taken = [
            r.placement
            for other in self._pools.values()
            if other is not entry
            for r in other.replicas.values()
        ]
        return entry.place(count, *self._devices(), taken)

    def _add_replica(self, entry: Pool, placement: ReplicaPlacement) -> None:
        assert self._client is not None and self._task_group is not None
        replica = PoolReplica(
            entry.name,
            entry.config,
            placement,
            host=self._host,
            port=self._new_port(),
            client=self._client,
            on_health=self._on_health,
        )
        entry.replicas[replica.name] = replica
        self._task_group.start_soon(self._start_replica, entry, replica)

    def _new_port(self) -> int:
        """A free port that no other replica of these pools was given."""
        taken = {r.port for entry in self._pools.values() for r in entry.replicas.values()}
        while (port := free_port(self._host)) in taken:
            pass
        return port

    async def _start_replica(self, entry: Pool, replica: PoolReplica) -> None:
        """Start one server; one that does not come up is retried (with backoff) up to the
        pool's max_restarts, then left failed for an operator."""
        assert self._supervisor is not None
        spec = replica.child_spec(self._state_dir, self._base_env)
        attempts = entry.config.max_restarts + 1
        for attempt in range(attempts):
            if entry.replicas.get(replica.name) is not replica or self._stop.is_set():
                return  # scaled away or shutting down meanwhile
            try:
                await self._supervisor.start(spec)
                return
            except WorkerCrashed as exc:
                replica.error = f"did not start (attempt {attempt + 1}/{attempts}): {exc}"
                log.error("model replica %s %s", replica.name, replica.error)
                await anyio.sleep(min(2.0 * 2**attempt, 60.0))
            except RuntimeError:
                return  # shutting down
        self._record(
            "model.health_changed",
            replica=replica.name,
            decision="failed",
            reason=replica.error,
            pool=entry.name,
        )

    async def _remove_replica(self, entry: Pool, name: str) -> None:
        replica = entry.replicas[name]
        replica.request_probe("scaled down")  # out of endpoints while it stops
        assert self._supervisor is not None
        try:
            with contextlib.suppress(KeyError):
                await self._supervisor.stop(name)
        finally:
            # Forgotten only now, so that its stop is recorded and shown while it drains.
            del entry.replicas[name]

    async def _autoscale_pool(self, entry: Pool) -> None:
        rule = entry.config.autoscale
        while True:
            await anyio.sleep(rule.interval_s)
            try:
                await self._autoscale(entry)
            except Exception:
                # One pool's failed step must not end run()'s task group, and every pool with it.
                log.exception("autoscale step of model pool %s failed", entry.name)

    async def _autoscale(self, entry: Pool) -> None:
        """Read every ready replica's /metrics, then take at most one step."""
        assert self._client is not None
        client = self._client
        ready = [r for r in entry.replicas.values() if r.serving(self._info(r.name))]

        async def read(replica: PoolReplica) -> None:
            try:
                # a server swamped by a queue answers /metrics slowly, and that is when its load
                # matters most: wait for it longer than for a probe
                replica.load = await read_load(
                    client, replica.base_url, timeout_s=METRICS_TIMEOUT_S
                )
            except (httpx.HTTPError, ValueError) as exc:
                replica.load = None
                log.debug("no load from %s: %s", replica.name, exc)

        async with anyio.create_task_group() as tg:
            for replica in ready:
                tg.start_soon(read, replica)
        cfg = entry.config
        if not cfg.autoscale.enabled:
            return
        since = None if entry.last_change is None else anyio.current_time() - entry.last_change
        decision = decide_scale(
            [r.load for r in ready if r.load is not None],
            replicas=len(entry.replicas),
            min_replicas=cfg.replicas.min,
            max_replicas=cfg.replicas.max,
            rule=cfg.autoscale,
            since_last_change_s=since,
        )
        if decision.direction == "hold":
            return
        try:
            await self.scale(entry.name, decision.after, reason=decision.reason, **decision.inputs)
        except PlacementError as exc:
            # Recorded once per cooldown, not at every look: the pool stays as it is.
            entry.last_change = anyio.current_time()
            entry.last_decision = {"at": time.time(), "change": "blocked", "reason": str(exc)}
            self._record(
                "model.scaled",
                decision="blocked",
                reason=str(exc),
                inputs=decision.inputs,
                pool=entry.name,
            )

    # supervisor events
    def _find(self, name: str) -> tuple[Pool, PoolReplica] | None:
        for entry in self._pools.values():
            replica = entry.replicas.get(name)
            if replica is not None:
                return entry, replica
        return None

    def _info(self, name: str) -> ChildInfo | None:
        if self._supervisor is None:
            return None
        try:
            return self._supervisor.info(name)
        except KeyError:
            return None

    def _on_health(self, replica: PoolReplica, healthy: bool, reason: str) -> None:
        self._record(
            "model.health_changed",
            replica=replica.name,
            decision="healthy" if healthy else "unhealthy",
            reason=reason,
            pool=replica.pool_name,
        )

    def _on_child_event(self, event: ChildEvent) -> None:
        found = self._find(event.name)
        if found is not None:
            entry, replica = found
            record_child_event(self._record, entry, replica, event, self._info(event.name))

    async def _stop_all(self, supervisor: Supervisor) -> None:
        """Every replica at once: each has its own grace, and they share no state."""
        async with anyio.create_task_group() as tg:
            for info in supervisor.children():
                tg.start_soon(_stop_quietly, supervisor, info.name)


async def _stop_quietly(supervisor: Supervisor, name: str) -> None:
    with contextlib.suppress(KeyError):
        await supervisor.stop(name)
