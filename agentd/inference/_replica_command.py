"""The argv and environment of one pool replica: the CPU build's or the CUDA package's server."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from agentd.config import ModelPoolConfig
from agentd.inference._placement import ReplicaPlacement, format_cores
from agentd.inference._vllm_command import VLLM_SERVER_MODULE, vllm_command

__all__ = ["replica_command"]


def replica_command(
    pool: ModelPoolConfig,
    placement: ReplicaPlacement,
    *,
    served_name: str,
    host: str,
    port: int,
    cache_dir: Path,
    base_env: Mapping[str, str],
) -> tuple[list[str], dict[str, str]]:
    """Return ``(argv, env)`` for the replica `placement` of `pool`; pure, no I/O.

    A CPU replica with a `python` launcher gets `vllm_command`'s argv (the CPU build), pinned
    to its cores. Every other replica gets the options of vLLM's own server: for a `command`
    launcher (``["vllm", "serve"]``) the model is positional, for a `python` launcher it is
    ``--model``. GPU replicas get ``--tensor-parallel-size`` (one per GPU placed) and
    ``--gpu-memory-utilization``; their GPUs come through ``CUDA_VISIBLE_DEVICES`` in `env`.
    The launcher's `env` goes over everything, and `extra_args` come last.
    """
    launcher = pool.launcher
    extra = list(pool.extra_args)
    if pool.revision is not None:
        extra = ["--revision", pool.revision, *extra]
    if placement.device == "cpu" and launcher.python is not None:
        argv, env = vllm_command(
            launcher.python,
            Path(pool.model),
            served_name,
            host,
            port,
            cache_dir=cache_dir,
            base_env=base_env,
            max_model_len=pool.max_model_len,
            max_num_seqs=pool.max_num_seqs,
            cpu_threads_bind=format_cores(placement.cpu_cores),
            kv_cache_bytes=placement.kv_cache_bytes or pool.kv_cache_bytes,
            tool_call_parser=pool.tool_call_parser,
            extra_args=extra,
        )
        return argv, env | placement.env | launcher.env
    if launcher.command is not None:
        argv = [*launcher.command, pool.model]
    else:
        assert launcher.python is not None  # the config allows exactly one of the two
        argv = [str(launcher.python), "-m", VLLM_SERVER_MODULE, "--model", pool.model]
    argv += [
        "--served-model-name",
        served_name,
        "--host",
        host,
        "--port",
        str(port),
        "--max-model-len",
        str(pool.max_model_len),
        "--max-num-seqs",
        str(pool.max_num_seqs),
        "--disable-uvicorn-access-log",
    ]
    env = dict(base_env) | {"VLLM_CACHE_ROOT": str(cache_dir), "VLLM_NO_USAGE_STATS": "1"}
    if placement.device == "gpu":
        argv += [
            "--tensor-parallel-size",
            str(placement.tensor_parallel_size),
            "--gpu-memory-utilization",
            str(placement.gpu_memory_utilization),
        ]
    else:
        kv_bytes = placement.kv_cache_bytes or pool.kv_cache_bytes
        argv += ["--kv-cache-memory-bytes", str(kv_bytes)]
        env.pop("VLLM_CPU_KVCACHE_SPACE", None)  # it would override the option
        env["VLLM_TARGET_DEVICE"] = "cpu"
    if pool.tool_call_parser is not None:
        argv += ["--tool-call-parser", pool.tool_call_parser, "--enable-auto-tool-choice"]
    argv += extra
    return argv, env | placement.env | launcher.env
