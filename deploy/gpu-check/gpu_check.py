#!/usr/bin/env python3
"""GPU check: NVML discovery, pool placement, and replicas that see exactly the GPUs given them.

Run from the repository root (it puts the root on sys.path itself):

    python3 deploy/gpu-check/gpu_check.py

Needs Python 3.11+ and anyio; nvidia-ml-py and a CUDA build of PyTorch for the GPU part (no
pydantic, NATS or vLLM). It prints one JSON object per line; the last is the verdict,
``{"event": "verdict", "ok": ...}``, and the exit status is 0 exactly when ``ok`` is true.

With a GPU: one replica of a 1 x tensor_parallel_size 1 pool is placed on a GPU and launched
through the supervisor with the placement's environment; it must see that GPU and no other
(count and UUID, checked against NVML). A second child, given ``CUDA_VISIBLE_DEVICES=""``, must
see none. Without a GPU the pool is placed on a CPU core instead and both children see none.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import anyio  # noqa: E402

from agentd.inference import (  # noqa: E402
    GpuInfo,
    PlacementError,
    PoolRequest,
    ReplicaPlacement,
    cpu_cores,
    discover_gpus,
    place_pool,
)
from agentd.supervisor import (  # noqa: E402
    ChildEvent,
    ChildEventKind,
    ChildSpec,
    RestartPolicy,
    RestartType,
    Supervisor,
)

DEADLINE_S = 50.0
REPORT_PREFIX = "REPORT "

# What a replica sees. Run with the same interpreter; torch may be missing (CPU-only hosts).
CHILD_SOURCE = r"""
import json, os, re, uuid

def uuid_text(value):
    text = str(value)
    if re.fullmatch(r"(GPU-)?[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", text):
        return text
    try:
        return str(uuid.UUID(bytes=bytes(b & 0xFF for b in value.bytes)))
    except Exception:
        return text

report = {
    "pid": os.getpid(),
    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    "cuda_device_order": os.environ.get("CUDA_DEVICE_ORDER"),
    "vllm_cpu_omp_threads_bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND"),
}
try:
    import torch
except ImportError as exc:
    report.update(torch=None, problem=f"torch missing: {exc}", device_count=0, devices=[])
else:
    report["torch"] = torch.__version__
    report["torch_cuda"] = torch.version.cuda
    count = torch.cuda.device_count()
    devices = []
    for i in range(count):
        props = torch.cuda.get_device_properties(i)
        raw = getattr(props, "uuid", None)
        devices.append({
            "index": i,
            "name": props.name,
            "uuid": None if raw is None else uuid_text(raw),
            "memory_total_bytes": props.total_memory,
        })
    if count:
        # Touch each device, so that a GPU listed but unusable fails here, not in vLLM.
        for i in range(count):
            torch.ones(1024, device=f"cuda:{i}").sum().item()
    report.update(device_count=count, devices=devices)
print("REPORT " + json.dumps(report), flush=True)
"""


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}, default=str), flush=True)


class JsonLogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        emit("log", logger=record.name, level=record.levelname, message=record.getMessage())


def normalized_uuid(text: str | None) -> str | None:
    return None if text is None else text.lower().removeprefix("gpu-")


def gpu_record(gpu: GpuInfo) -> dict[str, Any]:
    return dataclasses.asdict(gpu) | {"describe": gpu.describe()}


def try_place(
    label: str, pool: PoolRequest, gpus: list[GpuInfo], cores: list[int]
) -> list[ReplicaPlacement] | None:
    """Place `pool` and print the outcome; None (printed) on a PlacementError."""
    try:
        placements = place_pool(pool, gpus, cores)
    except PlacementError as exc:
        emit("placement_error", check=label, pool=pool.name, message=str(exc))
        return None
    emit("placement", check=label, replicas=[dataclasses.asdict(p) for p in placements])
    return placements


async def run_child(
    supervisor: Supervisor,
    exited: dict[str, anyio.Event],
    log_dir: Path,
    name: str,
    env: Mapping[str, str],
) -> dict[str, Any]:
    """Start a replica-like child through the supervisor, wait for its exit, return its report."""
    exited[name] = anyio.Event()
    spec = ChildSpec(
        name=name,
        argv=[sys.executable, "-c", CHILD_SOURCE],
        env=dict(env),
        restart=RestartPolicy(type=RestartType.TEMPORARY),
        stop_grace_s=5.0,
        log_path=log_dir / f"{name}.log",
    )
    await supervisor.start(spec)
    await exited[name].wait()
    info = supervisor.info(name)
    output = (log_dir / f"{name}.log").read_text(errors="replace").splitlines()
    reports = [line[len(REPORT_PREFIX) :] for line in output if line.startswith(REPORT_PREFIX)]
    report: dict[str, Any] = json.loads(reports[-1]) if reports else {"problem": "no report"}
    report |= {"child": name, "env_given": dict(env), "exit_code": info.last_exit_code}
    if not reports:
        report["output_tail"] = output[-20:]
    emit("child_report", **report)
    return report


def judge_env(report: dict[str, Any]) -> list[str]:
    """The child got the exit status 0 and the placement's variables, unchanged."""
    problems = []
    if report.get("exit_code") != 0:
        problems.append(f"{report['child']} exited with {report.get('exit_code')}")
    for name, value in report["env_given"].items():
        if report.get(name.lower()) != value:
            problems.append(
                f"{report['child']} got {name}={report.get(name.lower())!r}, not {value!r}"
            )
    return problems


def judge_gpu_child(report: dict[str, Any], placement: ReplicaPlacement) -> list[str]:
    problems = judge_env(report)
    if report.get("torch_cuda") is None:
        problems.append(f"{report['child']}: no CUDA build of torch ({report.get('torch')})")
    if report.get("device_count") != len(placement.gpu_indices):
        problems.append(
            f"{report['child']} saw {report.get('device_count')} GPUs, "
            f"was given {len(placement.gpu_indices)}"
        )
    seen = [normalized_uuid(d.get("uuid")) for d in report.get("devices", [])]
    given = [normalized_uuid(u) for u in placement.gpu_uuids]
    if seen != given:
        problems.append(f"{report['child']} saw GPUs {seen}, was given {given}")
    return problems


def judge_no_gpu_child(report: dict[str, Any]) -> list[str]:
    problems = judge_env(report)
    if report.get("device_count") != 0:
        problems.append(f"{report['child']} saw {report.get('device_count')} GPUs, expected 0")
    return problems


async def check() -> dict[str, Any]:
    problems: list[str] = []
    gpus = discover_gpus(visible=os.environ.get("CUDA_VISIBLE_DEVICES"))
    cores = cpu_cores()
    for gpu in gpus:
        emit("gpu", **gpu_record(gpu))
    if not gpus:
        emit("no_gpu", message="no GPU found: checking the CPU placement instead")
    emit("cpu", cores=cores)

    device: Literal["gpu", "cpu"] = "gpu" if gpus else "cpu"
    main_pool = PoolRequest(
        name="check", replicas=1, device=device, tensor_parallel_size=1, gpu_memory_utilization=0.5
    )
    placed = try_place("one replica, tensor_parallel_size 1", main_pool, gpus, cores)
    if placed is None:
        problems.append(f"pool 'check' could not be placed on the {device}")

    too_big = PoolRequest(name="too-big", device="gpu", tensor_parallel_size=len(gpus) + 1)
    if try_place("more GPUs than exist", too_big, gpus, cores) is not None:
        problems.append("a pool needing more GPUs than exist was placed")

    auto = PoolRequest(name="auto", replicas=len(gpus) + 1, device="auto", kv_cache_bytes=2**26)
    auto_placed = try_place("device auto, one replica more than GPUs", auto, gpus, cores)
    if auto_placed is not None and any(p.device != "cpu" for p in auto_placed):
        problems.append("device auto placed on GPUs a pool that needs more GPUs than exist")

    if placed is not None and placed[0].device == "gpu":
        # Two replicas at 25% on the GPU the check replica got (which had 50% free).
        one_gpu = [gpu for gpu in gpus if gpu.index == placed[0].gpu_indices[0]]
        exclusive = PoolRequest(
            name="exclusive", replicas=2, device="gpu", gpu_memory_utilization=0.25
        )
        if try_place("two replicas on one GPU, sharing off", exclusive, one_gpu, cores):
            problems.append("two replicas were placed on one GPU with sharing off")
        shared = dataclasses.replace(exclusive, name="shared", share_gpus=True)
        if try_place("two replicas on one GPU, sharing on", shared, one_gpu, cores) is None:
            problems.append("sharing on: two replicas at 25% memory each did not share a GPU")

    supervisor_events: list[ChildEvent] = []
    exited: dict[str, anyio.Event] = {}

    def on_event(event: ChildEvent) -> None:
        supervisor_events.append(event)
        # A spawn's reason is the whole command line, the child's source included.
        reason = "spawned" if event.kind is ChildEventKind.SPAWN else event.reason
        emit("child_event", kind=event.kind, child=event.name, pid=event.pid, reason=reason)
        if event.kind is ChildEventKind.EXIT and event.name in exited:
            exited[event.name].set()

    with tempfile.TemporaryDirectory(prefix="agentd-gpu-check-") as tmp:
        log_dir = Path(tmp)
        async with Supervisor(on_event=on_event) as supervisor:
            if placed is not None:
                replica = placed[0]
                report = await run_child(supervisor, exited, log_dir, replica.name, replica.env)
                if replica.device == "gpu":
                    problems += judge_gpu_child(report, replica)
                else:
                    problems += judge_no_gpu_child(report)
            hidden_env = {"CUDA_VISIBLE_DEVICES": ""}
            hidden = await run_child(supervisor, exited, log_dir, "no-gpu", hidden_env)
            problems += judge_no_gpu_child(hidden)

    return {
        "ok": not problems,
        "problems": problems,
        "mode": device,
        "gpus": len(gpus),
        "cores": len(cores),
        "python": sys.version.split()[0],
    }


async def main() -> int:
    handler = JsonLogHandler(level=logging.INFO)
    for name, level in (("agentd.inference", logging.INFO), ("agentd.supervisor", logging.WARNING)):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(level)
    started = anyio.current_time()
    try:
        with anyio.fail_after(DEADLINE_S):
            verdict = await check()
    except TimeoutError:
        verdict = {"ok": False, "problems": [f"the check took over {DEADLINE_S:.0f} s"]}
    except Exception as exc:  # a check reports every failure in its verdict
        verdict = {"ok": False, "problems": [f"the check failed: {exc!r}"]}
    verdict["elapsed_s"] = round(anyio.current_time() - started, 2)
    emit("verdict", **verdict)
    return 0 if verdict["ok"] else 1


if __name__ == "__main__":
    sys.exit(anyio.run(main))
