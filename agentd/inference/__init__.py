"""Inference: the models agentd serves through vLLM, where their servers run and how they start.

`ModelPools` runs the configured pools (placement, supervised vLLM replicas, liveness,
autoscaling); the LLM gateway reads `ReplicaEndpoint`s from it.

The tiny model's builder and the pool service need third-party packages (numpy, safetensors,
tokenizers; httpx, pydantic, prometheus-client); they are imported on first use, so that
discovery and placement also work where only the standard library (and, for GPUs, nvidia-ml-py)
is installed, as on a GPU host's check environment.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from agentd.inference._devices import GpuInfo, cpu_cores, discover_gpus
from agentd.inference._placement import (
    PlacementError,
    Placements,
    PoolRequest,
    ReplicaPlacement,
    format_cores,
    place_pool,
)
from agentd.inference._vllm_command import VLLM_SERVER_MODULE, vllm_command

if TYPE_CHECKING:
    from agentd.inference._load import ReplicaLoad, parse_vllm_metrics
    from agentd.inference._pool import missing_files
    from agentd.inference._pools import ModelPools, RecordDecision
    from agentd.inference._replica import ReplicaEndpoint
    from agentd.inference._replica_command import replica_command
    from agentd.inference._scaling import ScaleDecision, decide_scale
    from agentd.inference._tiny_model import MODEL_FILES, build_tiny_model

__all__ = [
    # tiny offline model
    "MODEL_FILES",
    "build_tiny_model",
    # devices on this host
    "GpuInfo",
    "cpu_cores",
    "discover_gpus",
    # placement of pool replicas
    "PlacementError",
    "Placements",
    "PoolRequest",
    "ReplicaPlacement",
    "format_cores",
    "place_pool",
    # vLLM server launch
    "VLLM_SERVER_MODULE",
    "replica_command",
    "vllm_command",
    # model pools: the service, and what the LLM gateway reads from it
    "ModelPools",
    "RecordDecision",
    "ReplicaEndpoint",
    "missing_files",
    # load and autoscaling
    "ReplicaLoad",
    "ScaleDecision",
    "decide_scale",
    "parse_vllm_metrics",
]

# name -> module; these need third-party packages (numpy, pydantic, httpx, prometheus-client)
_LAZY = {
    "MODEL_FILES": "_tiny_model",
    "build_tiny_model": "_tiny_model",
    "ModelPools": "_pools",
    "missing_files": "_pool",
    "RecordDecision": "_pools",
    "ReplicaEndpoint": "_replica",
    "replica_command": "_replica_command",
    "ReplicaLoad": "_load",
    "parse_vllm_metrics": "_load",
    "ScaleDecision": "_scaling",
    "decide_scale": "_scaling",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(f"agentd.inference.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
