"""One real PostgreSQL server for the whole test session, and a NATS server per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.checkpoints.postgres_server import PostgresServer, postgres_bindir, postgres_server
from tests.harness import nats_server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip(
            "no PostgreSQL binaries: install the test dependency pgserver (PyPI) or Debian's "
            "postgresql package"
        )
    with postgres_server(bindir) as server:
        yield server


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with nats_server(tmp_path_factory.mktemp("nats")) as url:
        yield url


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
