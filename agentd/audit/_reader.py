"""Read-only access to a decision-log file, for the daemon's read verbs and offline audits."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agentd.trace import DecisionLogError

__all__ = ["open_reader"]


@contextmanager
def open_reader(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection inside one read transaction (a consistent snapshot in WAL mode).

    Read-only: it can neither block the daemon's writer (WAL readers do not) nor change the file.
    """
    if not Path(path).is_file():
        raise DecisionLogError(f"no decision log at {path}")
    try:
        conn = sqlite3.connect(
            f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, isolation_level=None
        )
    except sqlite3.Error as exc:
        raise DecisionLogError(f"cannot open {path}: {exc}") from exc
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("BEGIN")
        yield conn
    finally:
        conn.close()
