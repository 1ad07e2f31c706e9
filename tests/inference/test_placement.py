"""Placement of pool replicas on GPUs and CPU cores, against lists of GPUs as NVML reports them."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentd.errors import AgentdError
from agentd.inference import (
    GpuInfo,
    PlacementError,
    PoolRequest,
    ReplicaPlacement,
    format_cores,
    place_pool,
)

GIB = 2**30


def gpu(
    index: int, *, used: float = 0.02, total_gib: int = 140, name: str = "NVIDIA H200"
) -> GpuInfo:
    total = total_gib * GIB
    return GpuInfo(
        index=index,
        uuid=f"GPU-{index:08x}-0000-0000-0000-000000000000",
        name=name,
        memory_total_bytes=total,
        memory_used_bytes=int(used * total),
        utilization_pct=0,
    )


def gpus(count: int, *, used: float = 0.02) -> list[GpuInfo]:
    return [gpu(i, used=used) for i in range(count)]


def error_of(pool: PoolRequest, *args: object, **kwargs: object) -> str:
    with pytest.raises(PlacementError) as caught:
        place_pool(pool, *args, **kwargs)  # type: ignore[arg-type]
    assert caught.value.pool == pool.name
    return str(caught.value)


# GPUs


def test_a_replica_gets_its_gpu_through_cuda_visible_devices() -> None:
    [replica] = place_pool(PoolRequest(name="main", device="gpu"), gpus(2), [0, 1])
    assert (replica.name, replica.device, replica.index) == ("main-0", "gpu", 0)
    assert replica.gpu_indices == (0,) and replica.tensor_parallel_size == 1
    assert replica.gpu_uuids == ("GPU-00000000-0000-0000-0000-000000000000",)
    assert replica.env == {"CUDA_VISIBLE_DEVICES": "0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert replica.cpu_cores == () and replica.kv_cache_bytes is None
    assert replica.gpu_memory_utilization == 0.9


def test_tensor_parallel_groups_take_whole_gpus_in_order() -> None:
    pool = PoolRequest(name="big", replicas=2, device="gpu", tensor_parallel_size=4)
    first, second = place_pool(pool, gpus(8), [0])
    assert first.gpu_indices == (0, 1, 2, 3) and second.gpu_indices == (4, 5, 6, 7)
    assert first.env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
    assert second.env["CUDA_VISIBLE_DEVICES"] == "4,5,6,7"
    assert second.tensor_parallel_size == 4


def test_uuids_can_name_the_gpus_instead_of_indices() -> None:
    pool = PoolRequest(name="big", device="gpu", tensor_parallel_size=2)
    [replica] = place_pool(pool, gpus(2), [], visible_devices="uuid")
    assert replica.env["CUDA_VISIBLE_DEVICES"] == ",".join(replica.gpu_uuids)
    assert replica.gpu_indices == (0, 1)


def test_the_error_names_the_pool_what_it_needs_and_what_is_free() -> None:
    pool = PoolRequest(name="main", replicas=2, device="gpu", tensor_parallel_size=4)
    assert error_of(pool, gpus(1), [0]) == (
        "pool 'main' needs 2 replicas x 4 GPUs (tensor_parallel_size 4, 90% memory each); "
        "free: 1 GPU (0: NVIDIA H200, 140 GiB, 2% used)"
    )


def test_placement_is_all_or_nothing() -> None:
    # 5 GPUs hold one group of 4 but not two: nothing is placed.
    pool = PoolRequest(name="main", replicas=2, device="gpu", tensor_parallel_size=4)
    message = error_of(pool, gpus(5), [0])
    assert "free: 5 GPUs (0: NVIDIA H200" in message and "; 4: NVIDIA H200" in message


def test_no_gpu_at_all_is_said_so() -> None:
    message = error_of(PoolRequest(name="main", device="gpu"), [], [0, 1])
    assert message == (
        "pool 'main' needs 1 replica x 1 GPU (tensor_parallel_size 1, 90% memory each); "
        "free: none (no GPU found)"
    )


def test_replicas_of_one_pool_share_no_gpu_by_default() -> None:
    pool = PoolRequest(name="chat", replicas=3, device="gpu", gpu_memory_utilization=0.2)
    message = error_of(pool, gpus(2), [])
    assert message.startswith("pool 'chat' needs 3 replicas x 1 GPU (tensor_parallel_size 1")
    placed = place_pool(dataclasses.replace(pool, replicas=2), gpus(2), [])
    assert [p.gpu_indices for p in placed] == [(0,), (1,)]


def test_a_gpu_held_by_another_pool_is_not_used() -> None:
    [other] = place_pool(PoolRequest(name="other", device="gpu"), gpus(2), [])
    [mine] = place_pool(PoolRequest(name="mine", device="gpu"), gpus(2), [], [other])
    assert other.gpu_indices == (0,) and mine.gpu_indices == (1,)
    message = error_of(PoolRequest(name="mine", device="gpu"), gpus(1), [], [other])
    assert message.endswith(
        "free: no GPU; not usable: 0: NVIDIA H200, 140 GiB, 2% used, "
        "90% reserved (held by 'other-0')"
    )


def test_sharing_packs_replicas_on_a_gpu_while_the_memory_lasts() -> None:
    pool = PoolRequest(
        name="small", replicas=2, device="gpu", gpu_memory_utilization=0.45, share_gpus=True
    )
    first, second = place_pool(pool, gpus(1), [])
    assert first.gpu_indices == second.gpu_indices == (0,)
    assert first.env["CUDA_VISIBLE_DEVICES"] == second.env["CUDA_VISIBLE_DEVICES"] == "0"
    # 2% used + 2 x 45% leaves 8%: a third replica does not fit.
    message = error_of(dataclasses.replace(pool, replicas=3), gpus(1), [])
    assert "45% memory each, GPUs shared" in message
    assert message.endswith("free: 1 GPU (0: NVIDIA H200, 140 GiB, 2% used)")


def test_sharing_prefers_gpus_nobody_holds() -> None:
    pool = PoolRequest(
        name="small", replicas=3, device="gpu", gpu_memory_utilization=0.3, share_gpus=True
    )
    placed = place_pool(pool, gpus(2), [])
    assert [p.gpu_indices for p in placed] == [(0,), (1,), (0,)]


def test_sharing_needs_both_sides_to_allow_it() -> None:
    exclusive = PoolRequest(name="excl", device="gpu", gpu_memory_utilization=0.3)
    sharing = PoolRequest(name="shr", device="gpu", gpu_memory_utilization=0.3, share_gpus=True)
    held_exclusively = place_pool(exclusive, gpus(1), [])
    assert "held by 'excl-0', which does not share it" in error_of(
        sharing, gpus(1), [], held_exclusively
    )
    held_shared = place_pool(sharing, gpus(1), [])
    assert "(held by 'shr-0')" in error_of(exclusive, gpus(1), [], held_shared)
    [both] = place_pool(dataclasses.replace(sharing, name="shr2"), gpus(1), [], held_shared)
    assert both.gpu_indices == (0,)


def test_a_gpu_needs_the_requested_memory_fraction_free() -> None:
    busy, idle = gpu(0, used=0.15), gpu(1, used=0.02)
    [replica] = place_pool(PoolRequest(name="m", device="gpu"), [busy, idle], [])
    assert replica.gpu_indices == (1,)
    # 85% free is exactly enough for 85%, not for 90%.
    [fits] = place_pool(
        PoolRequest(name="m", device="gpu", gpu_memory_utilization=0.85), [busy], []
    )
    assert fits.gpu_indices == (0,)
    message = error_of(PoolRequest(name="m", device="gpu"), [busy], [])
    assert message.endswith(
        "free: no GPU; not usable: 0: NVIDIA H200, 140 GiB, 15% used "
        "(85% of its memory free, 90% needed)"
    )


def test_a_gpu_gone_since_holds_nothing() -> None:
    [old] = place_pool(PoolRequest(name="old", device="gpu"), gpus(3), [])
    gone = dataclasses.replace(old, gpu_indices=(7,))
    [new] = place_pool(PoolRequest(name="new", device="gpu"), gpus(1), [], [gone])
    assert new.gpu_indices == (0,)


def test_more_replicas_later_keep_the_first_ones_where_they_were() -> None:
    cluster = [gpu(0, used=0.5), *gpus(7)[1:]]
    pool = PoolRequest(name="p", replicas=2, device="gpu", tensor_parallel_size=2)
    two = place_pool(pool, cluster, [])
    three = place_pool(dataclasses.replace(pool, replicas=3), cluster, [])
    assert three[:2] == two
    assert [p.gpu_indices for p in three] == [(1, 2), (3, 4), (5, 6)]


# CPU


def test_cpu_replicas_are_pinned_to_cores_of_their_own() -> None:
    pool = PoolRequest(
        name="cpu", replicas=3, device="cpu", cpu_cores_per_replica=2, kv_cache_bytes=64 * 2**20
    )
    placed = place_pool(pool, gpus(4), list(range(8)))
    assert [p.cpu_cores for p in placed] == [(0, 1), (2, 3), (4, 5)]
    assert [p.env["VLLM_CPU_OMP_THREADS_BIND"] for p in placed] == ["0-1", "2-3", "4-5"]
    assert all(p.device == "cpu" and p.kv_cache_bytes == 64 * 2**20 for p in placed)
    # A CPU replica on a GPU host must see no GPU.
    assert all(p.env["CUDA_VISIBLE_DEVICES"] == "" and p.gpu_indices == () for p in placed)


def test_cpu_placement_prefers_a_run_of_consecutive_cores() -> None:
    [other] = place_pool(PoolRequest(name="other", device="cpu"), [], [1])
    pool = PoolRequest(name="cpu", replicas=2, device="cpu", cpu_cores_per_replica=2)
    # Free: 0, 2, 3, 4. The first replica takes the run 2-3, not the lowest cores 0 and 2.
    first, second = place_pool(pool, [], [0, 1, 2, 3, 4], [other])
    assert (first.cpu_cores, second.cpu_cores) == ((2, 3), (0, 4))
    assert second.env["VLLM_CPU_OMP_THREADS_BIND"] == "0,4"


def test_the_cpu_error_names_cores_and_kv_cache() -> None:
    [other] = place_pool(PoolRequest(name="other", device="cpu"), [], [0])
    pool = PoolRequest(
        name="small", replicas=3, device="cpu", cpu_cores_per_replica=2, kv_cache_bytes=64 * 2**20
    )
    assert error_of(pool, [], [0, 1, 2, 3, 5], [other]) == (
        "pool 'small' needs 3 replicas x 2 CPU cores (64 MiB KV cache each); "
        "free: 4 CPU cores (1-3,5)"
    )
    assert error_of(pool, [], [0], [other]).endswith("free: no CPU core (all 1 held)")


# device auto


def test_auto_uses_gpus_when_there_are_enough() -> None:
    placed = place_pool(PoolRequest(name="a", replicas=2), gpus(2), [0, 1])
    assert [p.device for p in placed] == ["gpu", "gpu"]


def test_auto_falls_back_to_the_cpu() -> None:
    pool = PoolRequest(name="a", replicas=3)
    assert {p.device for p in place_pool(pool, gpus(2), [0, 1, 2])} == {"cpu"}
    assert {p.device for p in place_pool(pool, [], [0, 1, 2])} == {"cpu"}
    assert {p.device for p in place_pool(pool, [gpu(0, used=0.5)] * 3, [0, 1, 2])} == {"cpu"}


def test_auto_that_fits_nowhere_says_both() -> None:
    message = error_of(PoolRequest(name="a", replicas=3), gpus(2), [0, 1])
    assert message == (
        "pool 'a' needs 3 replicas x 1 GPU (tensor_parallel_size 1, 90% memory each) or, on the "
        "CPU, 3 replicas x 1 CPU core (1 GiB KV cache each); free: 2 GPUs (0: NVIDIA H200, "
        "140 GiB, 2% used; 1: NVIDIA H200, 140 GiB, 2% used); CPU: 2 CPU cores (0-1)"
    )


# the request itself


def test_placement_error_is_an_agentd_error_with_its_parts() -> None:
    error = PlacementError("p", "1 GPU", "none")
    assert isinstance(error, AgentdError)
    assert (error.pool, error.needs, error.free) == ("p", "1 GPU", "none")


def test_a_pool_with_no_replicas_needs_nothing() -> None:
    assert place_pool(PoolRequest(name="z", replicas=0, device="gpu"), [], []) == []


def test_taken_must_not_hold_the_pool_itself() -> None:
    placed = place_pool(PoolRequest(name="p", device="cpu"), [], [0, 1])
    with pytest.raises(ValueError, match="taken already holds replicas of pool 'p'"):
        place_pool(PoolRequest(name="p", device="cpu"), [], [0, 1], placed)


def test_a_bad_request_lists_every_problem() -> None:
    with pytest.raises(ValueError) as caught:
        PoolRequest(
            name="bad",
            replicas=-1,
            device="tpu",  # type: ignore[arg-type]
            tensor_parallel_size=0,
            gpu_memory_utilization=1.5,
            cpu_cores_per_replica=0,
            kv_cache_bytes=0,
        )
    message = str(caught.value)
    for field in (
        "replicas",
        "device",
        "tensor_parallel_size",
        "gpu_memory_utilization",
        "cpu_cores_per_replica",
        "kv_cache_bytes",
    ):
        assert field in message


def test_gpu_info_rejects_impossible_readings() -> None:
    with pytest.raises(ValueError, match="used of"):
        GpuInfo(index=0, uuid="GPU-x", name="x", memory_total_bytes=10, memory_used_bytes=11)


@pytest.mark.parametrize(
    ("cores", "text"),
    [([0], "0"), ([0, 1], "0-1"), ([0, 1, 2, 5], "0-2,5"), ([7, 3, 4, 3], "3-4,7"), ([], "")],
)
def test_core_lists_are_written_as_ranges(cores: list[int], text: str) -> None:
    assert format_cores(cores) == text


# invariants over many hosts and pools


pool_requests = st.builds(
    PoolRequest,
    name=st.sampled_from(["a", "b", "c", "d"]),
    replicas=st.integers(0, 3),
    device=st.sampled_from(["auto", "gpu", "cpu"]),
    tensor_parallel_size=st.integers(1, 3),
    gpu_memory_utilization=st.sampled_from([0.2, 0.35, 0.5, 0.9]),
    share_gpus=st.booleans(),
    cpu_cores_per_replica=st.integers(1, 3),
)
hosts = st.lists(st.sampled_from([0.0, 0.1, 0.3, 0.6]), max_size=4).map(
    lambda used: [gpu(i, used=u) for i, u in enumerate(used)]
)


@settings(max_examples=200, deadline=None)
@given(host=hosts, cores=st.integers(0, 6), pools=st.lists(pool_requests, max_size=4))
def test_whatever_is_placed_respects_exclusivity_memory_and_cores(
    host: list[GpuInfo], cores: int, pools: list[PoolRequest]
) -> None:
    placed: list[ReplicaPlacement] = []
    for pool in pools:
        if any(p.pool == pool.name for p in placed):
            continue
        try:
            replicas = place_pool(pool, host, list(range(cores)), placed)
        except PlacementError:
            continue
        assert len(replicas) == pool.replicas
        placed += replicas
    for g in host:
        holders = [p for p in placed if g.index in p.gpu_indices]
        if len(holders) > 1:
            assert all(p.share_gpus for p in holders)
        reserved = sum(p.gpu_memory_utilization for p in holders)
        assert g.memory_used_fraction + reserved <= 1 + 1e-9
    core_lists = [core for p in placed for core in p.cpu_cores]
    assert len(core_lists) == len(set(core_lists))
    for p in placed:
        if p.device == "gpu":
            assert len(set(p.gpu_indices)) == len(p.gpu_indices) == p.tensor_parallel_size
            assert p.env["CUDA_VISIBLE_DEVICES"] == ",".join(map(str, p.gpu_indices))
        else:
            assert p.cpu_cores and p.env["VLLM_CPU_OMP_THREADS_BIND"] == format_cores(p.cpu_cores)
