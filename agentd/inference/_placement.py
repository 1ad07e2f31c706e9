"""Placement of model-pool replicas on GPUs or CPU cores: pure, no I/O.

A replica is one vLLM server. On GPUs it gets `tensor_parallel_size` whole GPUs through
``CUDA_VISIBLE_DEVICES`` and shares none of them with another replica unless both pools allow it;
on the CPU it gets cores of its own through ``VLLM_CPU_OMP_THREADS_BIND`` and a KV cache of a
fixed size. Placement is all or nothing: a pool that does not fit raises `PlacementError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from agentd.errors import AgentdError
from agentd.inference._devices import GpuInfo

__all__ = [
    "PlacementError",
    "Placements",
    "PoolRequest",
    "ReplicaPlacement",
    "format_cores",
    "place_pool",
]

# Memory arithmetic is in bytes; this absorbs float rounding of fractions times totals.
_BYTES_SLACK = 1.0


@dataclass(frozen=True, kw_only=True)
class PoolRequest:
    """What one model pool asks for.

    `device` ``"auto"`` places the pool on GPUs when all its replicas fit there, else on the
    CPU. On GPUs each replica takes `tensor_parallel_size` GPUs and may use
    `gpu_memory_utilization` of each one's memory (vLLM's option of that name, which vLLM
    checks is free at start); with `share_gpus` its replicas may sit on GPUs that other
    sharing replicas hold, as long as the memory adds up. On the CPU each replica takes
    `cpu_cores_per_replica` cores of its own and a KV cache of `kv_cache_bytes`.
    """

    name: str
    replicas: int = 1
    device: Literal["auto", "gpu", "cpu"] = "auto"
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    share_gpus: bool = False
    cpu_cores_per_replica: int = 1
    kv_cache_bytes: int = 2**30

    def __post_init__(self) -> None:
        problems = []
        if not self.name:
            problems.append("name must not be empty")
        if self.replicas < 0:
            problems.append(f"replicas must be >= 0, got {self.replicas}")
        if self.device not in ("auto", "gpu", "cpu"):
            problems.append(f"device must be auto, gpu or cpu, got {self.device!r}")
        if self.tensor_parallel_size < 1:
            problems.append(f"tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")
        if not 0 < self.gpu_memory_utilization <= 1:
            problems.append(
                f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        if self.cpu_cores_per_replica < 1:
            problems.append(f"cpu_cores_per_replica must be >= 1, got {self.cpu_cores_per_replica}")
        if self.kv_cache_bytes < 1:
            problems.append(f"kv_cache_bytes must be >= 1, got {self.kv_cache_bytes}")
        if problems:
            raise ValueError(f"invalid PoolRequest {self.name!r}: " + "; ".join(problems))

    def gpu_need(self) -> str:
        """``2 replicas x 4 GPUs (tensor_parallel_size 4, 90% memory each)``."""
        tp = self.tensor_parallel_size
        shared = ", GPUs shared" if self.share_gpus else ""
        return (
            f"{_count(self.replicas, 'replica')} x {_count(tp, 'GPU')} "
            f"(tensor_parallel_size {tp}, {self.gpu_memory_utilization:.0%} memory each{shared})"
        )

    def cpu_need(self) -> str:
        """``2 replicas x 2 CPU cores (1 GiB KV cache each)``."""
        return (
            f"{_count(self.replicas, 'replica')} x {_count(self.cpu_cores_per_replica, 'CPU core')}"
            f" ({_format_bytes(self.kv_cache_bytes)} KV cache each)"
        )


@dataclass(frozen=True, kw_only=True)
class ReplicaPlacement:
    """Where one replica of a pool runs, and the environment that puts it there.

    `env` goes over the replica's environment: ``CUDA_VISIBLE_DEVICES`` (empty for a CPU
    replica, so that it sees no GPU) and ``CUDA_DEVICE_ORDER`` for GPU replicas,
    ``VLLM_CPU_OMP_THREADS_BIND`` for CPU replicas. A CPU replica's KV cache size is
    `kv_cache_bytes` (for ``--kv-cache-memory-bytes``, see `vllm_command`); a GPU replica's
    memory share is `gpu_memory_utilization` (for ``--gpu-memory-utilization``).
    """

    pool: str
    index: int
    device: Literal["gpu", "cpu"]
    gpu_indices: tuple[int, ...] = ()
    gpu_uuids: tuple[str, ...] = ()
    cpu_cores: tuple[int, ...] = ()
    gpu_memory_utilization: float = 0.0
    share_gpus: bool = False
    kv_cache_bytes: int | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``<pool>-<index>``, the replica's name in messages and in the supervisor."""
        return f"{self.pool}-{self.index}"

    @property
    def tensor_parallel_size(self) -> int:
        """One per GPU given (vLLM's ``--tensor-parallel-size``); 1 on the CPU."""
        return max(1, len(self.gpu_indices))


Placements = Sequence[ReplicaPlacement]
"""The replicas already placed on this host, of every other pool."""


class PlacementError(AgentdError):
    """A pool does not fit on this host: `needs` says what it asked for, `free` what there is."""

    def __init__(self, pool: str, needs: str, free: str) -> None:
        self.pool = pool
        self.needs = needs
        self.free = free
        super().__init__(f"pool {pool!r} needs {needs}; free: {free}")


def place_pool(
    pool: PoolRequest,
    gpus: Sequence[GpuInfo],
    cores: Sequence[int],
    taken: Placements = (),
    *,
    visible_devices: Literal["index", "uuid"] = "index",
) -> list[ReplicaPlacement]:
    """Place every replica of `pool` on what `gpus` and `cores` leave after `taken`.

    Replica n's placement depends only on replicas 0..n-1, so placing the same pool again with
    more replicas (and the same arguments otherwise) keeps the first ones where they were.
    GPU memory reserved by `taken` is subtracted from `gpus`' readings, so pass readings taken
    before those replicas started (the daemon's discovery at start), not fresh ones.
    ``CUDA_VISIBLE_DEVICES`` lists NVML indices, with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so that
    CUDA numbers GPUs as NVML does; `visible_devices` ``"uuid"`` lists UUIDs instead (vLLM
    before 0.24 cannot parse those).

    Raises PlacementError if the pool does not fit, ValueError if `taken` holds replicas of
    `pool` (leave them out to place it afresh).
    """
    if any(placement.pool == pool.name for placement in taken):
        raise ValueError(f"taken already holds replicas of pool {pool.name!r}")
    if pool.replicas == 0:
        return []
    if pool.device in ("gpu", "auto") and gpus:
        on_gpus = _GpuLedger(gpus, taken).place(pool, visible_devices)
        if on_gpus is not None:
            return on_gpus
    if pool.device in ("cpu", "auto"):
        on_cpu = _place_on_cpu(pool, cores, taken)
        if on_cpu is not None:
            return on_cpu
    gpu_free = _GpuLedger(gpus, taken).describe_free(pool)
    if pool.device == "gpu":
        raise PlacementError(pool.name, pool.gpu_need(), gpu_free)
    cpu_free = _describe_free_cores(cores, taken)
    if pool.device == "cpu":
        raise PlacementError(pool.name, pool.cpu_need(), cpu_free)
    raise PlacementError(
        pool.name,
        f"{pool.gpu_need()} or, on the CPU, {pool.cpu_need()}",
        f"{gpu_free}; CPU: {cpu_free}",
    )


def format_cores(cores: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"``: the form of ``VLLM_CPU_OMP_THREADS_BIND`` and taskset."""
    runs: list[str] = []
    ordered = sorted(set(cores))
    start = 0
    for i in range(1, len(ordered) + 1):
        if i == len(ordered) or ordered[i] != ordered[i - 1] + 1:
            first, last = ordered[start], ordered[i - 1]
            runs.append(str(first) if first == last else f"{first}-{last}")
            start = i
    return ",".join(runs)


class _GpuLedger:
    """Which replicas hold each GPU, while one pool is being placed."""

    def __init__(self, gpus: Sequence[GpuInfo], taken: Placements) -> None:
        self._gpus = list(gpus)
        self._holders: dict[int, list[ReplicaPlacement]] = {gpu.index: [] for gpu in gpus}
        for placement in taken:
            for index in placement.gpu_indices:
                # A GPU that is gone since (not in `gpus`) holds nothing any more.
                if index in self._holders:
                    self._holders[index].append(placement)

    def place(
        self, pool: PoolRequest, visible_devices: Literal["index", "uuid"]
    ) -> list[ReplicaPlacement] | None:
        placements = []
        for n in range(pool.replicas):
            usable = [gpu for gpu in self._gpus if self._problem(gpu, pool) is None]
            # Unheld GPUs first: sharing is allowed, not sought. The sort is stable, so ties
            # keep NVML's order.
            usable.sort(key=lambda gpu: len(self._holders[gpu.index]))
            chosen = usable[: pool.tensor_parallel_size]
            if len(chosen) < pool.tensor_parallel_size:
                return None
            ids = [str(gpu.index) if visible_devices == "index" else gpu.uuid for gpu in chosen]
            placement = ReplicaPlacement(
                pool=pool.name,
                index=n,
                device="gpu",
                gpu_indices=tuple(gpu.index for gpu in chosen),
                gpu_uuids=tuple(gpu.uuid for gpu in chosen),
                gpu_memory_utilization=pool.gpu_memory_utilization,
                share_gpus=pool.share_gpus,
                env={"CUDA_VISIBLE_DEVICES": ",".join(ids), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"},
            )
            for gpu in chosen:
                self._holders[gpu.index].append(placement)
            placements.append(placement)
        return placements

    def describe_free(self, pool: PoolRequest) -> str:
        """The GPUs one more replica of `pool` could use, then those it could not, and why."""
        if not self._gpus:
            return "none (no GPU found)"
        usable, unusable = [], []
        for gpu in self._gpus:
            problem = self._problem(gpu, pool)
            if problem is None:
                usable.append(self._describe(gpu))
            else:
                unusable.append(f"{self._describe(gpu)} ({problem})")
        free = f"{_count(len(usable), 'GPU')} ({'; '.join(usable)})" if usable else "no GPU"
        if unusable:
            free += f"; not usable: {'; '.join(unusable)}"
        return free

    def _problem(self, gpu: GpuInfo, pool: PoolRequest) -> str | None:
        """Why one more replica of `pool` cannot use `gpu`, or None if it can."""
        holders = self._holders[gpu.index]
        names = ", ".join(repr(holder.name) for holder in holders)
        if holders and not pool.share_gpus:
            return f"held by {names}"
        if not all(holder.share_gpus for holder in holders):
            return f"held by {names}, which does not share it"
        free_bytes = gpu.memory_total_bytes - gpu.memory_used_bytes - self._reserved_bytes(gpu)
        needed_bytes = pool.gpu_memory_utilization * gpu.memory_total_bytes
        if free_bytes + _BYTES_SLACK < needed_bytes:
            free_fraction = max(0.0, free_bytes / gpu.memory_total_bytes)
            needed = pool.gpu_memory_utilization
            return f"{free_fraction:.0%} of its memory free, {needed:.0%} needed"
        return None

    def _reserved_bytes(self, gpu: GpuInfo) -> float:
        fractions = sum(holder.gpu_memory_utilization for holder in self._holders[gpu.index])
        return fractions * gpu.memory_total_bytes

    def _describe(self, gpu: GpuInfo) -> str:
        reserved = self._reserved_bytes(gpu) / gpu.memory_total_bytes
        return gpu.describe() + (f", {reserved:.0%} reserved" if reserved else "")


def _place_on_cpu(
    pool: PoolRequest, cores: Sequence[int], taken: Placements
) -> list[ReplicaPlacement] | None:
    free = _free_cores(cores, taken)
    placements = []
    for n in range(pool.replicas):
        chosen = _pick_cores(free, pool.cpu_cores_per_replica)
        if chosen is None:
            return None
        free = [core for core in free if core not in chosen]
        placements.append(
            ReplicaPlacement(
                pool=pool.name,
                index=n,
                device="cpu",
                cpu_cores=chosen,
                kv_cache_bytes=pool.kv_cache_bytes,
                # An empty list hides every GPU: a CPU replica must not wander onto one.
                env={"CUDA_VISIBLE_DEVICES": "", "VLLM_CPU_OMP_THREADS_BIND": format_cores(chosen)},
            )
        )
    return placements


def _free_cores(cores: Sequence[int], taken: Placements) -> list[int]:
    held = {core for placement in taken for core in placement.cpu_cores}
    return sorted(set(cores) - held)


def _pick_cores(free: list[int], count: int) -> tuple[int, ...] | None:
    """The first run of `count` consecutive cores, else the lowest `count` free ones."""
    if len(free) < count:
        return None
    for start in range(len(free) - count + 1):
        if free[start + count - 1] - free[start] == count - 1:
            return tuple(free[start : start + count])
    return tuple(free[:count])


def _describe_free_cores(cores: Sequence[int], taken: Placements) -> str:
    free = _free_cores(cores, taken)
    if not free:
        return f"no CPU core (all {len(set(cores))} held)"
    return f"{_count(len(free), 'CPU core')} ({format_cores(free)})"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _format_bytes(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} B"
