"""Inference: the models agentd serves through vLLM, where their servers run and how they start.

The tiny model's builder needs numpy, safetensors and tokenizers; it is imported on first use,
so that discovery and placement also work where only the standard library (and, for GPUs,
nvidia-ml-py) is installed, as on a GPU host's check environment.
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
    "vllm_command",
]

_LAZY = {"MODEL_FILES", "build_tiny_model"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module("agentd.inference._tiny_model"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
