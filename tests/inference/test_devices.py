"""GPU discovery through NVML and the CPU cores this process may use.

The NVML calls are checked against a stand-in module here (this machine has no GPU); the real
library on a real GPU is exercised by deploy/gpu-check/gpu_check.py, and the real library
without a GPU or driver by `test_real_nvml_never_raises`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from agentd.inference import GpuInfo, cpu_cores, discover_gpus

REPO = Path(__file__).resolve().parents[2]
GIB = 2**30


class FakeNvmlError(Exception):
    pass


@dataclass
class FakeMemory:
    total: int
    used: int


@dataclass
class FakeUtilization:
    gpu: int


@dataclass
class FakeDevice:
    uuid: str
    name: str | bytes
    total: int
    used: int
    utilization: int | None = 10
    broken: bool = False


class FakeNvml(ModuleType):
    """The part of pynvml that discovery calls, over a list of devices."""

    NVMLError = FakeNvmlError

    def __init__(self, devices: list[FakeDevice], *, init_error: str | None = None) -> None:
        super().__init__("pynvml")
        self.devices = devices
        self.init_error = init_error
        self.calls: list[str] = []

    def nvmlInit(self) -> None:
        self.calls.append("init")
        if self.init_error is not None:
            raise FakeNvmlError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
        if self.devices[index].broken:
            raise FakeNvmlError("GPU is lost")
        return self.devices[index]

    def nvmlDeviceGetUUID(self, handle: FakeDevice) -> str:
        return handle.uuid

    def nvmlDeviceGetName(self, handle: FakeDevice) -> str | bytes:
        return handle.name

    def nvmlDeviceGetMemoryInfo(self, handle: FakeDevice) -> FakeMemory:
        return FakeMemory(handle.total, handle.used)

    def nvmlDeviceGetUtilizationRates(self, handle: FakeDevice) -> FakeUtilization:
        if handle.utilization is None:
            raise FakeNvmlError("Not Supported")
        return FakeUtilization(handle.utilization)


def two_gpus() -> list[FakeDevice]:
    return [
        FakeDevice("GPU-aaaa1111-0000-0000-0000-000000000000", "NVIDIA H200", 140 * GIB, GIB),
        FakeDevice(
            "GPU-bbbb2222-0000-0000-0000-000000000000",
            b"NVIDIA H100",
            80 * GIB,
            0,
            utilization=None,
        ),
    ]


@pytest.fixture
def inference_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="agentd.inference")
    return caplog


def test_every_gpu_is_read_and_nvml_is_shut_down(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml(two_gpus())
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert discover_gpus() == [
        GpuInfo(
            index=0,
            uuid="GPU-aaaa1111-0000-0000-0000-000000000000",
            name="NVIDIA H200",
            memory_total_bytes=140 * GIB,
            memory_used_bytes=GIB,
            utilization_pct=10,
        ),
        # Older nvidia-ml-py returns bytes; a GPU in MIG mode has no utilization.
        GpuInfo(
            index=1,
            uuid="GPU-bbbb2222-0000-0000-0000-000000000000",
            name="NVIDIA H100",
            memory_total_bytes=80 * GIB,
            memory_used_bytes=0,
            utilization_pct=None,
        ),
    ]
    assert nvml.calls == ["init", "shutdown"]


def test_a_broken_gpu_is_skipped_and_the_others_kept(
    monkeypatch: pytest.MonkeyPatch, inference_logs: pytest.LogCaptureFixture
) -> None:
    devices = two_gpus()
    devices[0].broken = True
    nvml = FakeNvml(devices)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert [gpu.index for gpu in discover_gpus()] == [1]
    assert "GPU 0 skipped: NVML: GPU is lost" in inference_logs.text
    assert nvml.calls == ["init", "shutdown"]


def test_no_driver_means_no_gpu_with_the_reason_logged(
    monkeypatch: pytest.MonkeyPatch, inference_logs: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([], init_error="Driver Not Loaded"))
    assert discover_gpus() == []
    assert "no GPU: NVML: Driver Not Loaded" in inference_logs.text


def test_no_package_means_no_gpu_with_the_reason_logged(
    monkeypatch: pytest.MonkeyPatch, inference_logs: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert discover_gpus() == []
    assert "nvidia-ml-py (pynvml) is not installed" in inference_logs.text


def test_nvml_without_devices_is_said_so(
    monkeypatch: pytest.MonkeyPatch, inference_logs: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([]))
    assert discover_gpus() == []
    assert "no GPU: NVML found none" in inference_logs.text


@pytest.mark.parametrize(
    ("visible", "indices"),
    [
        ("1", [1]),
        ("1,0", [1, 0]),
        (" 0 , 1 ", [0, 1]),
        ("GPU-bbbb", [1]),
        ("gpu-aaaa1111-0000-0000-0000-000000000000", [0]),
        ("", []),
        ("-1", []),
        # CUDA ignores everything from the first entry it cannot resolve.
        ("0,7,1", [0]),
        ("GPU-,1", []),  # "GPU-" names both: ambiguous
    ],
)
def test_visible_devices_restrict_discovery(
    monkeypatch: pytest.MonkeyPatch, visible: str, indices: list[int]
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(two_gpus()))
    assert [gpu.index for gpu in discover_gpus(visible=visible)] == indices


def test_real_nvml_never_raises(inference_logs: pytest.LogCaptureFixture) -> None:
    found = discover_gpus()
    if not found:
        assert "no GPU:" in inference_logs.text
    for gpu in found:
        assert gpu.uuid.startswith(("GPU-", "MIG-")) and gpu.memory_total_bytes > 0


def test_gpu_descriptions_round_to_whole_gib_and_percent() -> None:
    gpu = GpuInfo(
        index=3,
        uuid="GPU-x",
        name="NVIDIA H200",
        memory_total_bytes=143_771 * 2**20,
        memory_used_bytes=4_500 * 2**20,
    )
    assert gpu.describe() == "3: NVIDIA H200, 140 GiB, 3% used"
    assert gpu.utilization_pct is None


def test_cpu_cores_follow_this_process_affinity() -> None:
    assert cpu_cores() == sorted(os.sched_getaffinity(0))
    last = max(os.sched_getaffinity(0))
    code = (
        f"import os; os.sched_setaffinity(0, {{{last}}}); "
        "from agentd.inference import cpu_cores; print(cpu_cores())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=30,
    )
    assert result.stdout.strip() == f"[{last}]"
