"""Running `ModelPools` in a test: collected decision records that can be awaited."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from agentd.config import ModelPoolConfig
from agentd.inference import GpuInfo, ModelPools

FAKE_VLLM = Path(__file__).with_name("fake_vllm.py")


class Records:
    """Every record the pools made, and a way to wait for the next one that matches."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self._changed = anyio.Event()

    def __call__(self, kind: str, **fields: Any) -> None:
        self.items.append({"kind": kind, **fields})
        self._changed.set()
        self._changed = anyio.Event()

    def of(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [
            r
            for r in self.items
            if r["kind"] == kind and all(r.get(k) == v for k, v in match.items())
        ]

    async def wait(
        self, kind: str, *, count: int = 1, timeout_s: float = 15.0, **match: Any
    ) -> dict[str, Any]:
        """The `count`-th record of `kind` with the fields in `match`, once it exists."""
        with anyio.fail_after(timeout_s):
            while len(self.of(kind, **match)) < count:
                await self._changed.wait()
        return self.of(kind, **match)[count - 1]


def fake_pool(tmp: Path, **overrides: Any) -> ModelPoolConfig:
    """A pool served by fake_vllm.py; gauges come from tmp/metrics.json."""
    env = {"FAKE_VLLM_METRICS": str(tmp / "metrics.json"), **overrides.pop("env", {})}
    data: dict[str, Any] = {
        "model": "fake-org/fake-model",
        "revision": "r1",
        "launcher": {"command": [sys.executable, str(FAKE_VLLM)], "env": env},
        "device": "cpu",
        "liveness": {"interval_s": 0.3, "timeout_s": 1.0, "failures": 2},
        "autoscale": {"interval_s": 0.2, "cooldown_s": 0.5},
        "startup_timeout_s": 20.0,
        "stop_grace_s": 3.0,
        **overrides,
    }
    return ModelPoolConfig.model_validate(data)


@asynccontextmanager
async def running_pools(
    pools: dict[str, ModelPoolConfig],
    state_dir: Path,
    *,
    cores: Sequence[int] = (0, 1, 2, 3),
    gpus: Sequence[GpuInfo] = (),
) -> AsyncIterator[tuple[ModelPools, Records]]:
    records = Records()
    manager = ModelPools(
        pools, state_dir=state_dir, record=records, gpus=gpus, cores=cores, base_env=os.environ
    )
    async with anyio.create_task_group() as tg:
        await tg.start(manager.run)
        try:
            yield manager, records
        finally:
            with anyio.CancelScope(shield=True):
                await manager.shutdown()


async def poll(predicate: Callable[[], object], *, timeout_s: float, every_s: float = 0.05) -> None:
    """Return once `predicate()` is true. For views (snapshots, endpoints) that announce no
    change; records, which do, are awaited with `Records.wait`."""
    with anyio.fail_after(timeout_s):
        for _ in itertools.count():
            if predicate():
                return
            await anyio.sleep(every_s)
