"""Example tool: read-only SQL over a small SQLite file of loan applications.

The file is $AGENTD_LOANS_DB, else <state dir>/tools/loans.sqlite (state dir from
$AGENTD_STATE_DIR, else .agentd); it is created with a few rows on first use. Queries run on a
read-only connection, so even a write that got past policy (constraints.toml allows one
SELECT/WITH statement) fails here too.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from agentd.tools import tool

MAX_ROWS = 1000
_SEED = [
    ("A-1001", "Grace Hopper", 60000.0, "approved"),
    ("A-1002", "Alan Turing", 12000.0, "pending"),
    ("A-1003", "Ada Lovelace", 4500.0, "approved"),
    ("A-1004", "Edsger Dijkstra", 30000.0, "declined"),
]


def database_path() -> Path:
    tools_dir = Path(os.environ.get("AGENTD_STATE_DIR") or ".agentd") / "tools"
    return Path(os.environ.get("AGENTD_LOANS_DB") or tools_dir / "loans.sqlite")


def _ensure(path: Path) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS applications (applicant_id TEXT PRIMARY KEY, "
            "name TEXT, amount REAL, status TEXT)"
        )
        db.executemany("INSERT OR IGNORE INTO applications VALUES (?, ?, ?, ?)", _SEED)
    db.close()


@tool("sql.query", timeout_s=10)
def sql_query(
    query: Annotated[str, Field(description="one SELECT (or WITH ... SELECT) statement")],
) -> list[dict[str, Any]]:
    """Rows of a read-only query on the loan applications table (at most 1,000)."""
    path = database_path()
    _ensure(path)
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        rows = db.execute(query).fetchmany(MAX_ROWS)
        return [dict(row) for row in rows]
    finally:
        db.close()
