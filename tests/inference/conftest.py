"""Fixtures for the inference tests: the `vllm` marker, one tiny model built per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentd.inference import build_tiny_model


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "vllm: starts a real vLLM server (CPU build) from AGENTD_VLLM_PYTHON"
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))
