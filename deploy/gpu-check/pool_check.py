#!/usr/bin/env python3
"""GPU check of the pool manager: `ModelPools` places pools on the GPUs NVML reports, launches
their replicas through its supervisor, probes them, and each replica sees exactly its GPUs.

Run from the repository root:

    python3 deploy/gpu-check/pool_check.py

Needs Python 3.11+, pydantic, anyio, httpx and prometheus-client (agentd's own dependencies);
nvidia-ml-py and a CUDA build of PyTorch for the GPU part; no vLLM: the replicas are
stub_vllm.py, launched as ``vllm serve`` would be. Prints JSON lines; the last is the verdict and
the exit status is 0 exactly when it is ok.

A pool ``gpu`` gets one replica per GPU (tensor_parallel_size 1): replica n must see one GPU,
NVML's GPU n by UUID, and carry ``--tensor-parallel-size 1``. A pool ``cpu`` gets one replica on
a core of its own: it must see no GPU. Every replica must become ready through the real probes
(/health and a one-token completion), and no process may outlive the shutdown.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import anyio  # noqa: E402

from agentd.config import ModelPoolConfig  # noqa: E402
from agentd.inference import ModelPools, cpu_cores, discover_gpus  # noqa: E402

STUB = Path(__file__).with_name("stub_vllm.py")
DEADLINE_S = 120.0


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}, default=str), flush=True)


def pool(device: str, replicas: int) -> ModelPoolConfig:
    return ModelPoolConfig.model_validate(
        {
            "model": "stub/model",
            "launcher": {"command": [sys.executable, str(STUB)]},
            "device": device,
            "replicas": {"min": replicas, "max": replicas},
            "startup_timeout_s": 90.0,
            "liveness": {"interval_s": 1.0, "timeout_s": 10.0},
            "stop_grace_s": 5.0,
        }
    )


def uuid_of(text: str | None) -> str | None:
    return None if text is None else text.lower().removeprefix("gpu-")


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def check() -> list[str]:
    problems: list[str] = []
    gpus = discover_gpus(visible=os.environ.get("CUDA_VISIBLE_DEVICES"))
    for gpu in gpus:
        emit("gpu", index=gpu.index, uuid=gpu.uuid, name=gpu.name, total=gpu.memory_total_bytes)
    cores = cpu_cores()
    emit("cpu", cores=cores)
    configs = {"cpu": pool("cpu", 1)}
    if gpus:
        configs["gpu"] = pool("gpu", len(gpus))
    else:
        problems.append("NVML found no GPU")
    records: list[dict[str, Any]] = []
    expected = sum(c.replicas.min for c in configs.values())
    all_ready = anyio.Event()

    def record(kind: str, **fields: Any) -> None:
        records.append({"kind": kind, **fields})
        if sum(r["kind"] == "model.started" for r in records) >= expected:
            all_ready.set()

    state = Path(tempfile.mkdtemp(prefix="agentd-pool-check-"))
    manager = ModelPools(configs, state_dir=state, record=record)
    started = time.monotonic()
    pids: set[int] = set()
    async with anyio.create_task_group() as tg:
        await tg.start(manager.run)
        with anyio.move_on_after(DEADLINE_S):
            await all_ready.wait()
        ready_s = round(time.monotonic() - started, 2)
        snapshot = manager.snapshot()
        for row in snapshot:
            for member in row["members"]:
                emit("replica", pool=row["pool"], **member)
                pids.add(member["pid"])
        for name in manager.pool_names():
            endpoints = manager.endpoints(name)
            emit("endpoints", pool=name, replicas=[e.replica for e in endpoints])
            if len(endpoints) != configs[name].replicas.min:
                problems.append(f"pool {name}: {len(endpoints)} replicas ready")
        await manager.shutdown()
    for item in records:
        emit("record", **item)
    emit("ready", seconds=ready_s)
    for row in snapshot:
        for member in row["members"]:
            problems += judge(state, row["pool"], member, gpus)
    survivors = [pid for pid in pids if pid and alive(pid)]
    if survivors:
        problems.append(f"replica processes outlived the shutdown: {survivors}")
    return problems


def judge(state: Path, pool_name: str, member: dict[str, Any], gpus: list[Any]) -> list[str]:
    log = (state / "logs" / "models" / f"{member['name']}.log").read_text()
    lines = [line for line in log.splitlines() if line.startswith("REPORT ")]
    if not lines:
        return [f"{member['name']}: no REPORT in its log:\n{log[-2000:]}"]
    report = json.loads(lines[-1].removeprefix("REPORT "))
    emit("replica_report", replica=member["name"], **report)
    seen = [uuid_of(d.get("uuid")) for d in report["devices"]]
    if pool_name == "cpu":
        return [] if not seen else [f"{member['name']} (CPU) sees GPUs {seen}"]
    given = [uuid_of(gpus[i].uuid) for i in member["placement"]["gpus"]]
    problems = []
    if seen != given:
        problems.append(f"{member['name']} was given {given} and sees {seen}")
    argv = report["argv"]
    if argv[argv.index("--tensor-parallel-size") + 1] != "1":
        problems.append(f"{member['name']}: argv {argv}")
    return problems


def main() -> int:
    started = time.monotonic()
    problems = anyio.run(check)
    elapsed = round(time.monotonic() - started, 2)
    emit("verdict", ok=not problems, problems=problems, elapsed_s=elapsed)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
