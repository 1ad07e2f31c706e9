"""The pool manager against fake vLLM servers (real child processes, real HTTP): lifecycle,
liveness, failure reports, autoscaling, placement. test_pools_vllm.py runs the same paths
against the real vLLM CPU build."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentd.inference import (
    GpuInfo,
    ModelPools,
    PlacementError,
    ReplicaEndpoint,
    ScaleDecision,
    decide_scale,
)
from tests.harness import pid_alive
from tests.inference.pool_helpers import fake_pool, poll, running_pools

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def set_gauges(tmp: Path, *, running: float = 0, waiting: float = 0, kv: float = 0.0) -> None:
    (tmp / "metrics.json").write_text(
        json.dumps({"running": running, "waiting": waiting, "kv": kv})
    )


async def test_replicas_load_in_the_background_with_visible_progress(tmp_path: Path) -> None:
    pool = fake_pool(tmp_path, env={"FAKE_VLLM_STARTUP_S": "2"}, replicas={"min": 1, "max": 1})
    async with running_pools({"tiny": pool}, tmp_path / "state") as (pools, records):
        assert pools.pool_names() == ["tiny"]
        assert pools.endpoints("tiny") == []  # run() reported started before the replica
        # known from the config while no replica is ready: the gateway answers 503, not 404
        assert pools.pool_of("tiny") == "tiny" and pools.pool_of("other") is None
        assert pools.model_id("tiny") == "fake-org/fake-model"

        def loading_line() -> object:
            loading = pools.snapshot()[0]["members"][0]["loading"]
            return loading and loading["last_line"]

        await poll(loading_line, timeout_s=10)
        member = pools.snapshot()[0]["members"][0]
        assert member["state"] == "loading"
        assert "loading weights of fake-org/fake-model" in member["loading"]["last_line"]
        assert member["loading"]["elapsed_s"] >= 0
        assert member["placement"] == {"device": "cpu", "cores": "0", "kv_cache_bytes": 2**30}
        started = await records.wait("model.started", replica="tiny-0")
        assert started["pool"] == "tiny" and started["startup_s"] >= 2.0
        assert started["lineage"] == {"model_id": "fake-org/fake-model", "model_revision": "r1"}
        [endpoint] = pools.endpoints("tiny")
        assert endpoint == ReplicaEndpoint(
            pool="tiny",
            replica="tiny-0",
            base_url=endpoint.base_url,
            served_name="tiny",
            model="fake-org/fake-model",
            revision="r1",
        )
        row = pools.snapshot()[0]["members"][0]
        assert row["state"] == "ready" and row["loading"] is None
        log = (tmp_path / "state" / "logs" / "models" / "tiny-0.log").read_text()
        assert "serving tiny on port" in log
        pid = row["pid"]
    assert not pid_alive(pid)
    assert records.of("model.stopped", replica="tiny-0", decision="stop")


async def test_a_stopped_engine_fails_liveness_and_is_replaced(tmp_path: Path) -> None:
    pool = fake_pool(tmp_path)
    async with running_pools({"tiny": pool}, tmp_path / "state") as (pools, records):
        await records.wait("model.started", replica="tiny-0")
        pid = pools.snapshot()[0]["members"][0]["pid"]
        os.kill(pid, signal.SIGSTOP)  # /health would hang too: only a timed probe sees it
        unhealthy = await records.wait("model.health_changed", decision="unhealthy")
        assert "no answer within 1s" in unhealthy["reason"]
        assert pools.endpoints("tiny") == []
        killed = await records.wait("model.health_changed", decision="killed")
        assert "2 probes failed in a row, last: no answer within 1s" in killed["reason"]
        await records.wait("model.started", replica="tiny-0", count=2)
        assert records.of("model.stopped", replica="tiny-0", decision="exit")
        row = pools.snapshot()[0]["members"][0]
        assert row["pid"] != pid and row["restarts"] == 1 and row["state"] == "ready"
        assert not pid_alive(pid)
        assert len(pools.endpoints("tiny")) == 1


async def test_a_reported_failure_takes_the_replica_out_until_a_probe_passes(
    tmp_path: Path,
) -> None:
    pool = fake_pool(tmp_path, liveness={"interval_s": 60, "timeout_s": 1.0, "failures": 1})
    async with running_pools({"tiny": pool}, tmp_path / "state") as (pools, records):
        await records.wait("model.started", replica="tiny-0")
        pools.report_failure("tiny-0", "connect error")
        assert pools.endpoints("tiny") == []  # at once, before any probe
        await poll(lambda: pools.endpoints("tiny"), timeout_s=5)
        # the probe passed: the same process serves again, nothing was restarted
        assert pools.snapshot()[0]["members"][0]["restarts"] == 0
        pid = pools.snapshot()[0]["members"][0]["pid"]
        os.kill(pid, signal.SIGSTOP)
        pools.report_failure("tiny-0", "502 before the first byte")
        # interval_s is 60: only the reported failure can have led to this restart
        await records.wait("model.started", replica="tiny-0", count=2, timeout_s=15)
        assert not pid_alive(pid)


async def test_autoscaling_follows_the_metrics_with_hysteresis(tmp_path: Path) -> None:
    set_gauges(tmp_path, running=4, waiting=6)
    pool = fake_pool(tmp_path, replicas={"min": 1, "max": 2})
    async with running_pools({"tiny": pool}, tmp_path / "state", cores=[0, 1]) as (pools, rec):
        up = await rec.wait("model.scaled", decision="1->2")
        assert up["inputs"]["waiting_per_replica"] == 6.0
        assert "waiting per replica" in up["reason"]
        await rec.wait("model.started", replica="tiny-1")
        assert [m["placement"]["cores"] for m in pools.snapshot()[0]["members"]] == ["0", "1"]
        # between the thresholds: nothing moves
        set_gauges(tmp_path, running=3, waiting=1)
        await anyio.sleep(1.5)
        assert len(pools.endpoints("tiny")) == 2
        assert [r["decision"] for r in rec.of("model.scaled")] == ["0->1", "1->2"]
        loads = [m["load"] for m in pools.snapshot()[0]["members"]]
        assert loads == [{"running": 3.0, "waiting": 1.0, "kv_cache_pct": 0.0}] * 2
        set_gauges(tmp_path, running=0, waiting=0)
        down = await rec.wait("model.scaled", decision="2->1")
        assert down["inputs"]["replicas"] == 2
        await rec.wait("model.stopped", replica="tiny-1", decision="stop")
        assert [e.replica for e in pools.endpoints("tiny")] == ["tiny-0"]


async def test_scaling_beyond_the_free_devices_is_recorded_as_blocked(tmp_path: Path) -> None:
    set_gauges(tmp_path, waiting=10)
    pool = fake_pool(tmp_path, replicas={"min": 1, "max": 3})
    async with running_pools({"tiny": pool}, tmp_path / "state", cores=[0]) as (pools, rec):
        blocked = await rec.wait("model.scaled", decision="blocked")
        assert "pool 'tiny' needs 2 replicas x 1 CPU core" in blocked["reason"]
        assert blocked["reason"].endswith("free: 1 CPU core (0)")
        assert blocked["inputs"]["waiting_per_replica"] == 10.0
        assert pools.snapshot()[0]["desired"] == 1


H100 = dict(name="NVIDIA H100", memory_total_bytes=80 * 2**30, memory_used_bytes=2**30)


async def test_gpu_replicas_see_only_their_gpus(tmp_path: Path) -> None:
    gpus = [GpuInfo(index=i, uuid=f"GPU-{i}", **H100) for i in range(4)]  # type: ignore[arg-type]
    pool = fake_pool(tmp_path, device="gpu", tensor_parallel_size=2, replicas={"min": 2, "max": 2})
    async with running_pools({"big": pool}, tmp_path / "state", gpus=gpus) as (pools, rec):
        await rec.wait("model.started", replica="big-1")
        placements = [m["placement"]["gpus"] for m in pools.snapshot()[0]["members"]]
        assert placements == [[0, 1], [2, 3]]
    logs = tmp_path / "state" / "logs" / "models"
    log1 = (logs / "big-1.log").read_text()
    assert "CUDA_VISIBLE_DEVICES='2,3'" in log1
    argv = json.loads(log1.split("INFO argv ", 1)[1].splitlines()[0])
    assert argv[0] == "fake-org/fake-model"
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.9"
    assert argv[argv.index("--revision") + 1] == "r1"


async def test_a_pool_that_does_not_fit_stops_the_start_naming_need_and_free(
    tmp_path: Path,
) -> None:
    gpus = [GpuInfo(index=0, uuid="GPU-0", **H100)]  # type: ignore[arg-type]
    pools = ModelPools(
        {"big": fake_pool(tmp_path, device="gpu", tensor_parallel_size=2)},
        state_dir=tmp_path / "state",
        gpus=gpus,
        cores=[0, 1],
    )
    with pytest.raises(PlacementError) as info:
        await pools.run()
    error = info.value
    assert error.pool == "big"
    assert "1 replica x 2 GPUs (tensor_parallel_size 2" in error.needs
    assert error.free.startswith("1 GPU (0: NVIDIA H100, 80 GiB")
    await pools.shutdown()  # safe after a failed start


async def test_shutdown_is_safe_before_run_and_twice(tmp_path: Path) -> None:
    pools = ModelPools({}, state_dir=tmp_path)
    await pools.shutdown()
    await pools.shutdown()
    assert pools.snapshot() == [] and pools.pids() == []


async def test_a_failing_autoscale_step_is_logged_and_the_pools_run_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Anything an autoscale step raises (not only a PlacementError) is logged; it neither ends
    the pools nor stops that pool's autoscaler."""
    calls = 0

    def decide_that_fails_twice(*args: Any, **kwargs: Any) -> ScaleDecision:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError("autoscale rule exploded")
        return decide_scale(*args, **kwargs)

    monkeypatch.setattr("agentd.inference._pools.decide_scale", decide_that_fails_twice)
    set_gauges(tmp_path, running=4, waiting=6)
    pool = fake_pool(tmp_path, replicas={"min": 1, "max": 2})
    async with running_pools({"tiny": pool}, tmp_path / "state", cores=[0, 1]) as (pools, rec):
        # only the autoscaler, still running after its failed steps, can make this decision
        await rec.wait("model.scaled", decision="1->2")
        assert calls > 2
        await rec.wait("model.started", replica="tiny-1")
        assert len(pools.snapshot()[0]["members"]) == 2
    failures = [r for r in caplog.records if "autoscale step of model pool tiny" in r.message]
    assert len(failures) == 2
    assert all(r.exc_info and "exploded" in str(r.exc_info[1]) for r in failures)


async def test_a_pool_is_found_by_its_served_name_from_the_config(tmp_path: Path) -> None:
    pools = ModelPools(
        {
            "small": fake_pool(tmp_path, served_name="org/small-chat"),
            "large": fake_pool(tmp_path, model="org/large"),
        },
        state_dir=tmp_path / "state",
        cores=[0],
    )
    # before run(): nothing is ready, and every name a request may use is known
    assert pools.pool_of("org/small-chat") == "small" and pools.pool_of("small") == "small"
    assert pools.pool_of("large") == "large" and pools.pool_of("org/large") is None
    assert (pools.model_id("large"), pools.model_id("missing")) == ("org/large", None)
