"""deploy/gpu-check/gpu_check.py, run as a script: here (no GPU), in an environment like a GPU
host's (no pydantic, NATS, LangGraph, numpy), and down its GPU path over stand-in NVML and torch
(tests/inference/fake_gpu) that either honour CUDA_VISIBLE_DEVICES or ignore it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from agentd.inference import discover_gpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "gpu-check" / "gpu_check.py"
FAKE_GPU = Path(__file__).parent / "fake_gpu"
GIB = 2**30

# What the GPU host's check environment lacks; the script must not need any of it.
ABSENT_ON_GPU_HOST = (
    "pydantic",
    "nats",
    "langgraph",
    "numpy",
    "safetensors",
    "tokenizers",
    "casbin",
    "opentelemetry",
)
BLOCKING_RUNNER = f"""
import runpy, sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ABSENT_ON_GPU_HOST!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (absent on the GPU host)")
sys.meta_path.insert(0, Absent())
sys.argv = [{str(SCRIPT)!r}]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_check(
    argv: list[str], *, env: dict[str, str] | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """Run the check from /, so that it must find the repository by itself; its JSON lines."""
    base = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "PYTHONPATH")}
    result = subprocess.run(
        argv,
        cwd="/",
        env=base | (env or {}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines, result.stderr
    assert lines[-1]["event"] == "verdict", result.stdout + result.stderr
    return result.returncode, lines


def events(lines: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["event"] == kind]


def test_the_check_passes_here() -> None:
    code, lines = run_check([sys.executable, str(SCRIPT)])
    verdict = lines[-1]
    assert (code, verdict["ok"], verdict["problems"]) == (0, True, [])
    assert verdict["elapsed_s"] < 60
    if not discover_gpus():
        assert verdict["mode"] == "cpu" and events(lines, "no_gpu")
        [placement] = [p for p in events(lines, "placement") if p["replicas"][0]["pool"] == "check"]
        assert placement["replicas"][0]["env"]["CUDA_VISIBLE_DEVICES"] == ""
        [error] = events(lines, "placement_error")
        assert error["message"].startswith("pool 'too-big' needs 1 replica x 1 GPU")
        assert error["message"].endswith("free: none (no GPU found)")
    reports = events(lines, "child_report")
    assert [r["child"] for r in reports] == ["check-0", "no-gpu"]
    assert reports[1]["device_count"] == 0 and reports[1]["cuda_visible_devices"] == ""


def test_the_check_needs_nothing_a_gpu_host_lacks() -> None:
    code, lines = run_check([sys.executable, "-c", BLOCKING_RUNNER])
    assert (code, lines[-1]["ok"]) == (0, True), lines[-1]


def fake_gpus() -> dict[str, str]:
    gpus = [
        # GPU 0 is busy: the replica must go to GPU 1 and see it as its only device.
        {"uuid": "GPU-00000000-aaaa-0000-0000-000000000000", "name": "Fake A", "used": 100 * GIB},
        {"uuid": "GPU-11111111-bbbb-0000-0000-000000000000", "name": "Fake B", "used": GIB},
    ]
    listed = [gpu | {"total": 140 * GIB} for gpu in gpus]
    return {"PYTHONPATH": str(FAKE_GPU), "AGENTD_FAKE_GPUS": json.dumps(listed)}


def test_on_gpus_the_replica_sees_exactly_its_gpu() -> None:
    code, lines = run_check([sys.executable, str(SCRIPT)], env=fake_gpus())
    verdict = lines[-1]
    assert (code, verdict["ok"], verdict["mode"], verdict["gpus"]) == (0, True, "gpu", 2)
    assert [g["index"] for g in events(lines, "gpu")] == [0, 1]
    replica, hidden = events(lines, "child_report")
    assert replica["env_given"] == {"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert replica["device_count"] == 1
    assert replica["devices"][0]["uuid"] == "11111111-bbbb-0000-0000-000000000000"
    assert hidden["device_count"] == 0
    messages = {e["pool"]: e["message"] for e in events(lines, "placement_error")}
    assert messages["too-big"].startswith("pool 'too-big' needs 1 replica x 3 GPUs")
    assert "not usable: 0: Fake A, 140 GiB, 71% used" in messages["too-big"]
    assert messages["exclusive"] == (
        "pool 'exclusive' needs 2 replicas x 1 GPU (tensor_parallel_size 1, 25% memory each); "
        "free: 1 GPU (1: Fake B, 140 GiB, 1% used)"
    )
    [shared] = [e for e in events(lines, "placement") if e["replicas"][0]["pool"] == "shared"]
    assert [r["gpu_indices"] for r in shared["replicas"]] == [[1], [1]]


def test_a_replica_that_sees_more_gpus_than_given_fails_the_check() -> None:
    env = fake_gpus() | {"AGENTD_FAKE_TORCH_SEES_ALL": "1"}
    code, lines = run_check([sys.executable, str(SCRIPT)], env=env)
    verdict = lines[-1]
    assert (code, verdict["ok"]) == (1, False)
    assert "check-0 saw 2 GPUs, was given 1" in verdict["problems"]
    assert "no-gpu saw 2 GPUs, expected 0" in verdict["problems"]
