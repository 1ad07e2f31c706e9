"""Read-only access to a decision-log file, for the daemon's read verbs and offline audits."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agentd.trace import DecisionLogError, DecisionRecord

from ._runs import message_id_of

__all__ = ["open_reader", "run_of_message"]


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


def _like_literal(text: str) -> str:
    """`text` as a LIKE pattern that matches only itself (with `ESCAPE '\\'`)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def run_of_message(path: Path, message_id: str) -> str | None:
    """The run that handled `message_id`: the newest `run.started` record naming it in its
    `inputs.message_id`, or None.

    The id is a literal, never a pattern: `%` and `_` in it match only themselves (a user's
    `agentctl trace %` must not show the newest run), and each candidate's message id is
    compared exactly before it counts.
    """
    sql = (
        "SELECT body FROM records WHERE kind = 'run.started' AND body LIKE ? ESCAPE '\\' "
        "ORDER BY seq DESC"
    )
    pattern = f'%"message_id":"{_like_literal(message_id)}"%'
    with open_reader(path) as conn:
        for (body,) in conn.execute(sql, (pattern,)):
            record = DecisionRecord.from_body(body)
            if message_id_of(record) == message_id:
                return record.run_id
    return None
