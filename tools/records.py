"""Example tool: read-only SQL over a small SQLite file of loan applications.

The file is $AGENTD_LOANS_DB, else <state dir>/tools/sql/loans.sqlite (state dir from
$AGENTD_STATE_DIR, else .agentd); it is created with a few rows on first use. Queries run on a
read-only connection, so even a write that got past policy (constraints.toml allows one
SELECT/WITH statement) fails here too.

A query is work its caller shapes (a recursive CTE can run forever), so the tool runs in a
child process killed at its deadline (`isolated=True`), and the query itself stops at the
deadline: SQLite's progress handler checks it every few thousand VM steps, and the gateway's
cancel interrupts the connection from another thread. Either alone stops it, in the daemon too
(`[tools.overrides."sql.query"] isolated = false`).

Its process runs in the sandbox (docs/sandbox.md, "Isolated tools"): it may write only the
folder of its default file (created with the seed rows there; a folder of its own, so the loan
ledger beside it stays out of reach) and reads $AGENTD_LOANS_DB when that is set; an operator
who puts a new file elsewhere grants its folder with
`[tools.overrides."sql.query"] write = ["/that/folder"]`.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from agentd.errors import ToolError
from agentd.tools import call_deadline, tool

MAX_ROWS = 1000
# SQLite VM instructions between two looks at the deadline (about a millisecond of work)
CHECK_EVERY = 10_000
_SEED = [
    ("A-1001", "Grace Hopper", 60000.0, "approved"),
    ("A-1002", "Alan Turing", 12000.0, "pending"),
    ("A-1003", "Ada Lovelace", 4500.0, "approved"),
    ("A-1004", "Edsger Dijkstra", 30000.0, "declined"),
]
# what its sandbox grants beyond its scratch folder: the file when $AGENTD_LOANS_DB names one,
# and the default file's folder (where it is created)
READ = ["$AGENTD_LOANS_DB"]
WRITE = ["$AGENTD_STATE_DIR/tools/sql"]


def database_path() -> Path:
    folder = Path(os.environ.get("AGENTD_STATE_DIR") or ".agentd") / "tools" / "sql"
    return Path(os.environ.get("AGENTD_LOANS_DB") or folder / "loans.sqlite")


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


@tool("sql.query", timeout_s=10, isolated=True, max_running=4, read=READ, write=WRITE)
def sql_query(
    query: Annotated[str, Field(description="one SELECT (or WITH ... SELECT) statement")],
) -> list[dict[str, Any]]:
    """Rows of a read-only query on the loan applications table (at most 1,000)."""
    path = database_path()
    _ensure(path)
    deadline = call_deadline()
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        # a non-zero answer aborts the statement ("interrupted")
        db.set_progress_handler(deadline.expired, CHECK_EVERY)
        with deadline.on_cancel(db.interrupt):
            rows = db.execute(query).fetchmany(MAX_ROWS)
        return [dict(row) for row in rows]
    except sqlite3.OperationalError as exc:
        if deadline.expired():
            raise ToolError("sql.query: the query ran past its deadline and was stopped") from None
        raise ToolError(f"sql.query: {exc}") from None
    finally:
        db.close()
