"""A replica's argv and environment: the CPU build pinned to its cores, the CUDA package on its
GPUs, a `command` launcher, and the launcher's environment over everything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentd.config import ModelPoolConfig
from agentd.inference import GpuInfo, PoolRequest, place_pool, replica_command

GPUS = [
    GpuInfo(index=i, uuid=f"GPU-{i}", name="H100", memory_total_bytes=2**36, memory_used_bytes=0)
    for i in range(4)
]


def pool(**fields: Any) -> ModelPoolConfig:
    return ModelPoolConfig.model_validate({"model": "/models/tiny", **fields})


def command(cfg: ModelPoolConfig, device: str, index: int = 0) -> tuple[list[str], dict[str, str]]:
    request = PoolRequest(
        name="p",
        replicas=index + 1,
        device=device,  # type: ignore[arg-type]
        tensor_parallel_size=cfg.tensor_parallel_size,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        kv_cache_bytes=cfg.kv_cache_bytes,
    )
    placement = place_pool(request, GPUS, [0, 1, 2, 3])[index]
    return replica_command(
        cfg,
        placement,
        served_name="tiny",
        host="127.0.0.1",
        port=8001,
        cache_dir=Path("/state/cache"),
        base_env={"PATH": "/bin", "VLLM_CPU_KVCACHE_SPACE": "4", "CUDA_VISIBLE_DEVICES": "0,1"},
    )


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_a_cpu_replica_runs_the_cpu_build_on_its_own_cores() -> None:
    cfg = pool(launcher={"python": "/venv/bin/python", "env": {"OMP_X": "1"}}, revision="abc")
    argv, env = command(cfg, "cpu", index=1)
    assert argv[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert option(argv, "--model") == "/models/tiny"
    assert option(argv, "--kv-cache-memory-bytes") == str(2**30)
    assert option(argv, "--revision") == "abc"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "1"  # replica 1 gets core 1
    assert env["CUDA_VISIBLE_DEVICES"] == ""  # and no GPU
    assert "VLLM_CPU_KVCACHE_SPACE" not in env  # it would override the option
    assert env["OMP_X"] == "1" and env["VLLM_CACHE_ROOT"] == "/state/cache"


def test_a_gpu_replica_gets_its_gpus_and_tensor_parallelism() -> None:
    cfg = pool(
        launcher={"command": ["vllm", "serve"]},
        tensor_parallel_size=2,
        gpu_memory_utilization=0.8,
        extra_args=["--max-num-seqs", "64"],
    )
    argv, env = command(cfg, "gpu", index=1)
    assert argv[:3] == ["vllm", "serve", "/models/tiny"]  # the model is positional
    assert option(argv, "--tensor-parallel-size") == "2"
    assert option(argv, "--gpu-memory-utilization") == "0.8"
    assert option(argv, "--served-model-name") == "tiny" and option(argv, "--port") == "8001"
    assert argv[-2:] == ["--max-num-seqs", "64"]  # extra args last: they win
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert "--kv-cache-memory-bytes" not in argv


def test_a_python_launcher_on_gpus_names_the_model_with_an_option() -> None:
    argv, env = command(pool(launcher={"python": "/venv/bin/python"}), "gpu")
    assert argv[1:5] == ["-m", "vllm.entrypoints.openai.api_server", "--model", "/models/tiny"]
    assert option(argv, "--tensor-parallel-size") == "1"
    assert env["CUDA_VISIBLE_DEVICES"] == "0"
