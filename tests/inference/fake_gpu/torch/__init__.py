"""A stand-in for a CUDA build of torch over the GPUs in AGENTD_FAKE_GPUS (see ../README.md).

Like CUDA, it numbers the GPUs that CUDA_VISIBLE_DEVICES lists (indices or UUID prefixes, in
that order, up to the first it cannot resolve) from 0.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace
from typing import Any

__version__ = "0.0+fake"
version = SimpleNamespace(cuda="12.8")


def _visible() -> list[dict[str, Any]]:
    gpus: list[dict[str, Any]] = json.loads(os.environ["AGENTD_FAKE_GPUS"])
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None or os.environ.get("AGENTD_FAKE_TORCH_SEES_ALL"):
        return gpus
    seen: list[dict[str, Any]] = []
    for item in (part.strip() for part in listed.split(",")):
        if item.isdigit() and int(item) < len(gpus):
            seen.append(gpus[int(item)])
        elif item and [g["uuid"] for g in gpus if g["uuid"].startswith(item)]:
            seen.append(next(g for g in gpus if g["uuid"].startswith(item)))
        else:
            break
    return seen


class _Uuid:
    """Like torch's _CUuuid: str() is the UUID without NVML's "GPU-" prefix."""

    def __init__(self, text: str) -> None:
        self._text = text.removeprefix("GPU-")

    def __str__(self) -> str:
        return self._text


def _device_count() -> int:
    return len(_visible())


def _get_device_properties(index: int) -> SimpleNamespace:
    gpu = _visible()[index]
    return SimpleNamespace(name=gpu["name"], uuid=_Uuid(gpu["uuid"]), total_memory=gpu["total"])


cuda = SimpleNamespace(device_count=_device_count, get_device_properties=_get_device_properties)


class _Tensor:
    def sum(self) -> _Tensor:
        return self

    def item(self) -> float:
        return 0.0


def ones(size: int, *, device: str = "cpu") -> _Tensor:
    if device.startswith("cuda:") and int(device.split(":")[1]) >= _device_count():
        raise RuntimeError(f"CUDA error: invalid device ordinal {device}")
    return _Tensor()
