"""Fixtures for the decision-log tests: real SQLite files and key files in a temporary dir."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentd.trace import DecisionLog, DecisionRecord, Redactor

LogFactory = Callable[..., DecisionLog]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def open_log(state_dir: Path) -> Iterator[LogFactory]:
    """Opens DecisionLogs on `state_dir/decisions.db`; closes whatever is left open."""
    opened: list[DecisionLog] = []

    def factory(*, checkpoint_every: int = 1000, redactor: Redactor | None = None) -> DecisionLog:
        log = DecisionLog(
            state_dir / "decisions.db",
            signing_key_path=state_dir / "decision-log.key",
            checkpoint_every=checkpoint_every,
            redactor=redactor,
        )
        opened.append(log)
        return log

    yield factory
    for log in opened:
        log.close()


def make_record(i: int, **fields: object) -> DecisionRecord:
    """A small record with a recognizable payload; the same `i` gives the same id."""
    values: dict[str, object] = {
        "id": f"rec-{i:06d}",
        "kind": "tool.executed",
        "agent": f"agent-{i % 3}",
        "run_id": f"run-{i % 7}",
        "conversation_id": f"conv-{i % 5}",
        "trace_id": f"{i % 11:032x}",
        "inputs": {"tool": "search", "query": f"needle-{i:05d}"},
        "outputs": {"hits": [i, i + 1]},
        "decision": "allow",
        "rule": "p, agent, tool:search, call",
    }
    values.update(fields)
    return DecisionRecord.model_validate(values)


def tamper(db: Path, *statements: str, params: tuple[object, ...] = ()) -> None:
    """Change the log file the way an attacker would: drop the guard triggers, run SQL."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
            conn.execute(f"DROP TRIGGER {name}")
        for statement in statements:
            conn.execute(statement, params if "?" in statement else ())
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
