"""What this host offers model pools: its GPUs (read through NVML) and the CPU cores it may use.

NVML comes from ``nvidia-ml-py`` (module ``pynvml``), imported only when GPUs are discovered: a
host without the package, the driver or a GPU simply has none, with the reason logged.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

__all__ = ["GpuInfo", "cpu_cores", "discover_gpus"]

logger = logging.getLogger("agentd.inference")


@dataclass(frozen=True, kw_only=True)
class GpuInfo:
    """One GPU as NVML reported it at discovery.

    `index` is NVML's index, which is the PCI bus order; `uuid` is NVML's (``GPU-…``).
    `utilization_pct` is the share of the last sample period the GPU was busy, None where NVML
    cannot tell (MIG mode, some virtual GPUs).
    """

    index: int
    uuid: str
    name: str
    memory_total_bytes: int
    memory_used_bytes: int
    utilization_pct: int | None = None

    def __post_init__(self) -> None:
        if self.index < 0 or self.memory_total_bytes <= 0:
            raise ValueError(f"invalid GpuInfo: index {self.index}, {self.memory_total_bytes} B")
        if not 0 <= self.memory_used_bytes <= self.memory_total_bytes:
            raise ValueError(
                f"invalid GpuInfo {self.index}: {self.memory_used_bytes} B used of "
                f"{self.memory_total_bytes} B"
            )

    @property
    def memory_used_fraction(self) -> float:
        """Used memory as a fraction of the total, 0.0 to 1.0."""
        return self.memory_used_bytes / self.memory_total_bytes

    def describe(self) -> str:
        """``0: NVIDIA H200, 140 GiB, 2% used`` (memory used), for messages."""
        gib = self.memory_total_bytes / 2**30
        return f"{self.index}: {self.name}, {gib:.0f} GiB, {self.memory_used_fraction:.0%} used"


def discover_gpus(*, visible: str | None = None) -> list[GpuInfo]:
    """Every GPU NVML sees, in index order; an empty list, with the reason logged, if none.

    Never raises for a missing package, driver library or GPU. `visible` keeps only the GPUs
    it names, the way ``CUDA_VISIBLE_DEVICES`` would: comma-separated NVML indices (PCI bus
    order, as CUDA's with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``) or UUIDs (a prefix is enough);
    ``""`` names none. Pass ``os.environ.get("CUDA_VISIBLE_DEVICES")`` so that an operator can
    keep GPUs away from agentd by setting that variable in its unit.
    """
    try:
        nvml = importlib.import_module("pynvml")
    except ImportError:
        logger.info("no GPU: nvidia-ml-py (pynvml) is not installed")
        return []
    try:
        gpus = _read_nvml(nvml)
    except nvml.NVMLError as exc:
        logger.info("no GPU: NVML: %s", exc)
        return []
    if visible is not None:
        gpus = _restrict(gpus, visible)
    if not gpus:
        logger.info("no GPU: NVML found none%s", "" if visible is None else " that is visible")
    return gpus


def cpu_cores() -> list[int]:
    """The CPU cores this process may run on (its affinity), in ascending order."""
    affinity: Callable[[int], set[int]] | None = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        return sorted(affinity(0))
    return list(range(os.cpu_count() or 1))


def _read_nvml(nvml: ModuleType) -> list[GpuInfo]:
    nvml.nvmlInit()
    try:
        gpus = []
        for index in range(int(nvml.nvmlDeviceGetCount())):
            try:
                gpus.append(_read_gpu(nvml, index))
            except nvml.NVMLError as exc:
                # One broken GPU (fallen off the bus, in reset) must not hide the others.
                logger.warning("GPU %d skipped: NVML: %s", index, exc)
        return gpus
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError as exc:
            logger.debug("nvmlShutdown: %s", exc)


def _read_gpu(nvml: ModuleType, index: int) -> GpuInfo:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    try:
        utilization: int | None = int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except nvml.NVMLError:
        utilization = None
    return GpuInfo(
        index=index,
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        name=_text(nvml.nvmlDeviceGetName(handle)),
        memory_total_bytes=int(memory.total),
        memory_used_bytes=min(int(memory.used), int(memory.total)),
        utilization_pct=utilization,
    )


def _text(value: Any) -> str:
    # Older nvidia-ml-py releases return bytes, newer ones str.
    return value.decode() if isinstance(value, bytes) else str(value)


def _restrict(gpus: list[GpuInfo], visible: str) -> list[GpuInfo]:
    chosen: list[GpuInfo] = []
    for item in (part.strip() for part in visible.split(",")):
        if not item:
            continue
        if item.isdigit():
            match = [gpu for gpu in gpus if gpu.index == int(item)]
        else:
            match = [gpu for gpu in gpus if gpu.uuid.lower().startswith(item.lower())]
        if len(match) != 1:
            # CUDA stops at the first entry it cannot resolve, and so does this.
            logger.warning("CUDA_VISIBLE_DEVICES entry %r matches no single GPU", item)
            break
        if match[0] not in chosen:
            chosen.append(match[0])
    return chosen
