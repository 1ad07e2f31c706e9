"""Fixtures for the tool gateway tests: one real nats-server per module, and private files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import nats_server


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with nats_server(tmp_path_factory.mktemp("nats")) as url:
        yield url


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example loan.approve tool's ledger (its side effect), private to the test."""
    path = tmp_path / "loan-ledger.jsonl"
    monkeypatch.setenv("AGENTD_LOAN_LEDGER", str(path))
    monkeypatch.setenv("AGENTD_LOANS_DB", str(tmp_path / "loans.sqlite"))
    return path
