"""Fixtures for the worker tests: one real nats-server per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import nats_server


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with nats_server(tmp_path_factory.mktemp("nats")) as url:
        yield url
